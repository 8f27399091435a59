#!/usr/bin/env python3
"""Captures the dtls-records fuzzer's seeds from a real DTLS handshake (run by hand; the
output is committed, as it is not deterministic):

    courier-server serve --dtls-psk --coaps-port 25684 ...    # a device key from `device add --psk`
    Fuzz/Corpus/capture-dtls.py 25699 25684 &
    coap-client-openssl -u IDENTITY -k KEY -m get coaps://127.0.0.1:25699/v1/chats

It relays datagrams between the client and the server and writes, in the fuzzer's input format
([peer][length, 2 bytes][datagram] per datagram), the client's side of the exchange.
"""
import os
import select
import socket
import struct
import sys

listen_port, server_port = int(sys.argv[1]), int(sys.argv[2])
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dtls-records")
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", listen_port))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.connect(("127.0.0.1", server_port))
client = None
sent = []
while True:
    ready, _, _ = select.select([front, back], [], [], 5)
    if not ready:
        break
    for sock in ready:
        if sock is front:
            data, client = front.recvfrom(65536)
            sent.append(data)
            back.send(data)
        else:
            front.sendto(back.recv(65536), client)


def framed(datagrams, peer=0):
    return b"".join(bytes([peer]) + struct.pack(">H", len(d)) + d for d in datagrams)


def write(name, data):
    with open(os.path.join(here, name + ".bin"), "wb") as f:
        f.write(data)


write("client-hello", framed(sent[:1]))
write("client-hello-truncated", framed([sent[0][:60]]))
write("handshake-and-request", framed(sent))
write("two-peers", framed(sent[:2], 0) + framed(sent[:2], 1))
write("hello-then-junk", framed(sent[:1]) + framed([bytes(range(40))]))
print(f"capture-dtls: {len(sent)} client datagrams written to {here}")

#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus: Fuzz/Corpus/<target>/<name>.bin, one input per file.

The seeds are well-formed inputs of each kind (RFC 7252's example messages, Courier's Protobuf
messages as the Swift types encode them, WebSocket frames as a device sends them), from which
libFuzzer mutates. Run it again after changing it and commit the result; it is deterministic.
Crashing inputs found later are added by hand beside these, named regression-*.bin.
"""
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


# Protobuf binary (the subset Courier's schema uses).
def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value) if value else b""


def field_bytes(number, value):
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value if value else b""


def field_message(number, value):
    # A set message field is written even when empty.
    return varint(number << 3 | 2) + varint(len(value)) + value


def send_message(cmid, chat, text, sent):
    return field_bytes(1, cmid) + field_varint(2, chat) + field_bytes(3, text) + field_varint(4, sent)


def cursor(chat, seq):
    return field_varint(1, chat) + field_varint(2, seq)


def hello(token, have, name):
    return field_bytes(1, token) + b"".join(field_message(2, c) for c in have) + field_bytes(3, name)


def sync_request(have, limit):
    return b"".join(field_message(1, c) for c in have) + field_varint(2, limit)


def chat_message(smid, chat, seq, user, device, cmid, text, sent, accepted):
    return (field_varint(1, smid) + field_varint(2, chat) + field_varint(3, seq) + field_varint(4, user)
            + field_varint(5, device) + field_bytes(6, cmid) + field_bytes(7, text)
            + field_varint(8, sent) + field_varint(9, accepted))


CURSORS = [cursor(7, 0), cursor((1 << 64) - 1, (1 << 64) - 1), cursor(3, 41)]
HELLO = hello("tok-3f2a", CURSORS[:2], "courier/1.0")
PUSH_ACK = b"".join(field_message(1, c) for c in CURSORS)
HEARTBEAT = field_varint(1, 1_700_000_000_123)
SYNC = sync_request(CURSORS, 500)
CLIENT_FRAMES = {
    "client-frame-hello": field_message(1, HELLO),
    "client-frame-hello-empty": field_message(1, b""),
    "client-frame-ack": field_message(2, PUSH_ACK),
    "client-frame-heartbeat": field_message(3, HEARTBEAT),
    "client-frame-sync": field_message(4, SYNC),
}
SEND_MESSAGE = send_message("c-1", 7, "hello", 1_700_000_000_123)

PROTOBUF = {
    "send-message": SEND_MESSAGE,
    "send-message-emoji": send_message("ü", (1 << 64) - 1, "multi\nline, emoji 🚀, NUL \0", -1),
    "send-message-long-id": send_message("x" * 128, 1, "", -(1 << 63)),
    "sync-request": SYNC,
    "sync-request-empty": b"",
    "create-chat": field_bytes(1, "team") + field_bytes(2, "alice") + field_bytes(2, "bob"),
    "join-chat": field_bytes(1, "team"),
    "invite-to-chat": field_varint(1, 7) + field_bytes(2, "carol"),
    "history-request": field_varint(1, 7) + field_varint(2, 100) + field_varint(3, 50),
    "search-request": field_bytes(1, "hello world") + field_varint(2, 7) + field_varint(3, 20),
    "send-result": field_bytes(1, "c-1") + field_varint(2, 42) + field_varint(3, 7) + field_varint(4, 1)
    + field_varint(5, 1_700_000_000_456),
    "error": field_varint(1, 6) + field_bytes(2, "try later") + field_varint(3, 5),
    "server-frame-welcome": field_message(1, field_varint(1, 3) + field_varint(2, 5) + field_varint(3, 30_000)
                                          + field_varint(4, 1_700_000_000_000) + field_varint(5, 65_536)),
    "server-frame-push": field_message(2, field_message(1, chat_message(
        42, 7, 1, 3, 5, "c-1", "hello", 1_700_000_000_123, 1_700_000_000_456))),
    "server-frame-receipt": field_message(2, field_message(2, field_varint(1, 7) + field_varint(2, 1)
                                                           + field_varint(3, 42) + field_bytes(4, "c-1"))),
    **CLIENT_FRAMES,
}


# CoAP (RFC 7252 §3).
def coap(mtype, code, mid, token=b"", options=(), payload=b""):
    out = bytearray([1 << 6 | mtype << 4 | len(token), code, mid >> 8, mid & 0xFF]) + token
    previous = 0
    for number, value in sorted(options, key=lambda option: option[0]):
        delta, length = number - previous, len(value)

        def nibble(n):
            if n < 13:
                return n, b""
            if n < 269:
                return 13, bytes([n - 13])
            return 14, struct.pack(">H", n - 269)

        dn, dx = nibble(delta)
        ln, lx = nibble(length)
        out += bytes([dn << 4 | ln]) + dx + lx + value
        previous = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def uint(value):
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def block(num, more, szx):
    return uint(num << 4 | (8 if more else 0) | szx)


CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, CONTENT, CHANGED, CONTINUE, CREATED = 0x01, 0x02, 0x45, 0x44, 0x5F, 0x41
URI_PATH, URI_QUERY, CONTENT_FORMAT, BLOCK2, BLOCK1, SIZE1, SIZE2, OBSERVE, ETAG, PROXY_URI = (
    11, 15, 12, 23, 27, 60, 28, 6, 4, 35)
V1_MSG = [(URI_PATH, b"v1"), (URI_PATH, b"msg")]
TOKEN = b"\x7f\x01\xa2\x33"

COAP = {
    # RFC 7252 Appendix A's exchanges (Figures 16-21).
    "rfc7252-get-temperature": coap(CON, GET, 0x7D34, options=[(URI_PATH, b"temperature")]),
    "rfc7252-ack-content": coap(ACK, CONTENT, 0x7D34, payload=b"22.3 C"),
    "rfc7252-get-with-token": coap(CON, GET, 0x7D34, b"\x20", [(URI_PATH, b"temperature")]),
    "rfc7252-empty-ack": coap(ACK, 0, 0x7D34),
    "rfc7252-reset": coap(RST, 0, 0x7D35),
    "rfc7252-ping": coap(CON, 0, 0x0001),
    "rfc7252-non-get": coap(NON, GET, 0xA1B2, b"\x73\x74", [(URI_PATH, b"temperature")]),
    # Courier's own requests.
    "courier-post-message": coap(CON, POST, 0x0102, TOKEN, V1_MSG + [
        (CONTENT_FORMAT, uint(65001)), (URI_QUERY, b"t=tok-3f2a")], SEND_MESSAGE),
    "courier-created": coap(ACK, CREATED, 0x0102, TOKEN, [(CONTENT_FORMAT, uint(65001))],
                            PROTOBUF["send-result"]),
    "courier-post-block1-first": coap(CON, POST, 0x0200, TOKEN, V1_MSG + [
        (BLOCK1, block(0, True, 6)), (SIZE1, uint(2500))], b"\xAA" * 1024),
    "courier-block1-continue": coap(ACK, CONTINUE, 0x0200, TOKEN, [(BLOCK1, block(0, True, 6))]),
    "courier-get-block2-later": coap(CON, GET, 0x0300, TOKEN, [(URI_PATH, b"v1"), (URI_PATH, b"history"),
                                                               (BLOCK2, block(1000, False, 2))]),
    "courier-content-block2": coap(ACK, CONTENT, 0x0300, TOKEN, [
        (BLOCK2, block(2, True, 0)), (SIZE2, uint(4000)), (ETAG, b"\x00\x00\x00\x09")], b"\x55" * 16),
    "observe-notification": coap(NON, CONTENT, 0xFFFF, b"\x01" * 8, [(OBSERVE, uint(0x123456))], b"x"),
    # Extended option deltas and lengths: nibble 13 and 14 forms.
    "proxy-uri-long": coap(CON, GET, 0x0400, b"", [(PROXY_URI, b"coap://example.net/" + b"p" * 300)]),
    "option-number-2000": coap(CON, GET, 0x0401, b"", [(2000, b"v" * 20), (65000, b"")]),
}


# WebSocket frames (RFC 6455 §5.2), as a device sends them: masked.
MASK = b"\x37\xfa\x21\x3d"


def frame(opcode, payload, fin=True, mask=MASK):
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        length = bytes([len(payload)])
    elif len(payload) < 1 << 16:
        length = bytes([126]) + struct.pack(">H", len(payload))
    else:
        length = bytes([127]) + struct.pack(">Q", len(payload))
    if mask is None:
        return bytes([first]) + length + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first, length[0] | 0x80]) + length[1:] + mask + masked


CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FRAME_HELLO = frame(BINARY, CLIENT_FRAMES["client-frame-hello"])

# The first byte is the chunk size the rest arrives in (0: all at once).
WEBSOCKET = {
    "hello": b"\0" + FRAME_HELLO,
    "session": b"\0" + FRAME_HELLO + frame(BINARY, CLIENT_FRAMES["client-frame-heartbeat"])
    + frame(BINARY, CLIENT_FRAMES["client-frame-ack"]) + frame(BINARY, CLIENT_FRAMES["client-frame-sync"])
    + frame(CLOSE, struct.pack(">H", 1000)),
    "session-in-3-byte-reads": b"\3" + FRAME_HELLO + frame(BINARY, CLIENT_FRAMES["client-frame-heartbeat"]),
    "fragmented-hello": b"\0" + frame(BINARY, CLIENT_FRAMES["client-frame-hello"][:10], fin=False)
    + frame(PING, b"mid") + frame(CONT, CLIENT_FRAMES["client-frame-hello"][10:20], fin=False)
    + frame(CONT, CLIENT_FRAMES["client-frame-hello"][20:]),
    "ping-then-close": b"\0" + frame(PING, b"are you there") + frame(PONG, b"")
    + frame(CLOSE, struct.pack(">H", 1001) + b"going away"),
    "close-empty": b"\0" + frame(CLOSE, b""),
    "text-frame": b"\0" + frame(TEXT, b'{"hello": true}'),
    "unmasked-binary": b"\0" + frame(BINARY, CLIENT_FRAMES["client-frame-heartbeat"], mask=None),
    "binary-16-bit-length": b"\x40" + FRAME_HELLO + frame(BINARY, field_message(3, HEARTBEAT) + b"\0" * 200),
    "continuation-without-start": b"\0" + frame(CONT, b"\x1a\x00"),
    "send-message-not-a-frame": b"\0" + frame(BINARY, SEND_MESSAGE),
}


def write(target, seeds):
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if not name.startswith("regression-"):
            os.remove(os.path.join(directory, name))
    for name, data in seeds.items():
        with open(os.path.join(directory, name + ".bin"), "wb") as handle:
            handle.write(data)


if __name__ == "__main__":
    write("coap-codec", COAP)
    write("protobuf-decode", PROTOBUF)
    write("websocket-frames", WEBSOCKET)

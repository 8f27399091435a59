"""A push-session client on Python's websockets library, driven by the Swift tests.

Usage: push_client.py URI ORIGIN|- FRAME...
Sends each frame in turn (hex-encoded bytes, `big:N` for N bytes, `frags:N:HEX` (or
`frags:N:*M` for M bytes) as one message in N fragments, or `hold:S` to wait S seconds instead, or `listen:S` to print every frame that comes in S seconds) and reads one
answer after each, then pings. Prints one line per event: `frame HEX`, `pong`, `closed CODE REASON`, or
`refused STATUS` when the upgrade is refused, `unreachable REASON` when no connection (or no
TLS handshake) could be made. A wss:// URI trusts the CA file named by $COURIER_TEST_CA.
"""
import asyncio
import os
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def main():
    uri, origin, frames = sys.argv[1], sys.argv[2], sys.argv[3:]
    tls = ssl.create_default_context(cafile=os.environ["COURIER_TEST_CA"]) if uri.startswith("wss:") else None
    try:
        async with connect(uri, origin=None if origin == "-" else origin, max_size=None, open_timeout=10, ssl=tls) as ws:
            try:
                for frame in frames:
                    if frame.startswith("hold:"):
                        await asyncio.sleep(float(frame[5:]))
                        continue
                    if frame.startswith("listen:"):
                        until = asyncio.get_running_loop().time() + float(frame[7:])
                        while (left := until - asyncio.get_running_loop().time()) > 0:
                            try:
                                answer = await asyncio.wait_for(ws.recv(), timeout=left)
                            except TimeoutError:
                                break
                            print("frame", answer.hex() if isinstance(answer, bytes) else answer.encode().hex(), flush=True)
                        continue
                    if frame.startswith("frags:"):
                        _, count, payload = frame.split(":")
                        data = bytes(7 for _ in range(int(payload[1:]))) if payload.startswith("*") else bytes.fromhex(payload)
                        count = int(count)
                        cut = [len(data) * i // count for i in range(count + 1)]
                        # An iterable of bytes goes out as one message, a fragment per item.
                        await ws.send([data[cut[i]:cut[i + 1]] for i in range(count)])
                    else:
                        data = bytes(7 for _ in range(int(frame[4:]))) if frame.startswith("big:") else bytes.fromhex(frame)
                        await ws.send(data)
                    answer = await asyncio.wait_for(ws.recv(), timeout=10)
                    print("frame", answer.hex() if isinstance(answer, bytes) else answer.encode().hex(), flush=True)
                waiter = await ws.ping()
                await asyncio.wait_for(waiter, timeout=10)
                print("pong", flush=True)
                await ws.close()
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                print("closed", rcvd.code if rcvd else 0, rcvd.reason if rcvd else "", flush=True)
    except InvalidStatus as refused:
        print("refused", refused.response.status_code, flush=True)
    except (OSError, ssl.SSLError, TimeoutError, EOFError) as error:
        print("unreachable", type(error).__name__, flush=True)
    except Exception as error:  # websockets' handshake errors (InvalidMessage and the like)
        print("unreachable", type(error).__name__, flush=True)


asyncio.run(main())

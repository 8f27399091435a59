"""Connections to the push port that never authenticate, driven by the Swift tests.

Usage: strangers.py HOST PORT COUNT SECONDS [SOURCE_ADDRESS]
Opens COUNT TCP connections (200 at a time), from SOURCE_ADDRESS if given: half send a
WebSocket upgrade request to /v1/push and then nothing (no Hello), half send nothing at all.
Holds each for at most SECONDS after it opened, noting when the server closes it, then prints
one JSON line:
{"opened": n, "failed": n, "closed": n, "closed_after": [seconds since opened, ...]}
"""
import asyncio
import json
import resource
import sys
import time

UPGRADE = (
    "GET /v1/push HTTP/1.1\r\nHost: courier\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


async def stranger(host, port, source, upgrade, results, seconds):
    try:
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), timeout=10)
    except (OSError, asyncio.TimeoutError):
        results["failed"] += 1
        return
    opened = time.monotonic()
    deadline = opened + seconds
    results["opened"] += 1
    if upgrade:
        writer.write(UPGRADE)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            data = await asyncio.wait_for(reader.read(4096), timeout=left)
            if not data:
                results["closed"] += 1
                results["closed_after"].append(round(time.monotonic() - opened, 2))
                break
    except (OSError, asyncio.TimeoutError):
        if time.monotonic() < deadline:
            results["closed"] += 1
            results["closed_after"].append(round(time.monotonic() - opened, 2))
    finally:
        writer.close()


async def main():
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    source = sys.argv[5] if len(sys.argv) > 5 else None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {"opened": 0, "failed": 0, "closed": 0, "closed_after": []}
    tasks = []
    for start in range(0, count, 200):
        for index in range(start, min(count, start + 200)):
            tasks.append(asyncio.ensure_future(stranger(host, port, source, index % 2 == 0, results, seconds)))
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    print(json.dumps(results), flush=True)


asyncio.run(main())

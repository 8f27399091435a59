#!/usr/bin/env python3
"""A CoAP server on aiocoap (a real peer no one at Courier wrote) for Courier's interop tests.

Resources: POST /echo returns the request body; GET /big returns a 3000-byte text;
POST /slow answers after 1.5 s, so the response goes out separately after an empty ACK.
Block-wise transfer both ways is aiocoap's own.
"""
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource

BIG = "".join(f"line {i:04d} of the big resource\n" for i in range(100)).encode()[:3000]


class Echo(resource.Resource):
    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload)


class Big(resource.Resource):
    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=BIG)


class Slow(resource.Resource):
    async def render_post(self, request):
        await asyncio.sleep(1.5)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"slow:" + request.payload)


async def main(port):
    site = resource.Site()
    site.add_resource(["echo"], Echo())
    site.add_resource(["big"], Big())
    site.add_resource(["slow"], Slow())
    await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

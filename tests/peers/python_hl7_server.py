"""Reference peer: python-hl7's asyncio MLLP server answering AA, storing nothing.

Used by the load comparison (see README, performance). Prints `PORT <n>` once listening on
127.0.0.1 (port 0 = any free port) and serves until killed.
"""
import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        if not writer.is_closing():
            writer.close()


async def main(port):
    async with await start_hl7_server(handle, host="127.0.0.1", port=port, limit=1 << 20) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))

"""A tiny HTTP/1.1 server whose whole process stalls once: `python stall_server.py PORT N S`.

Answers every request with 200 at once, except request number N (from 1), before which it
blocks its event loop for S seconds: requests arriving meanwhile queue behind it, as behind a
garbage-collection pause or a blocking call in a real server.
"""

from __future__ import annotations

import asyncio
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


async def main(port: int, stall_at: int, stall_seconds: float) -> None:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                served += 1
                if served == stall_at:
                    time.sleep(stall_seconds)  # noqa: ASYNC251 (blocks every connection, on purpose)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))

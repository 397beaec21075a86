"""A tiny HTTP/1.1 server that answers by path: `python route_server.py PORT`.

    /status/NNN   answers with status NNN
    /close        closes the connection without answering
    /hang         never answers
    anything else answers 200

Every answer sends back the request's X-Request-ID, as fastpost's middleware does.
"""

from __future__ import annotations

import asyncio
import re
import sys

REQUEST_ID = re.compile(rb"\r\nx-request-id: *([^\r]*)", re.I)
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)


def answer(status: int, request_id: bytes | None) -> bytes:
    echo = b"X-Request-ID: " + request_id + b"\r\n" if request_id else b""
    return b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n%s\r\nok" % (status, echo)


async def main(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = CONTENT_LENGTH.search(head)
                if length:
                    await reader.readexactly(int(length[1]))
                path = head.split(b" ", 2)[1]
                found = REQUEST_ID.search(head)
                request_id = found[1] if found else None
                if path == b"/close":
                    break
                if path == b"/hang":
                    await asyncio.sleep(3600)
                status = int(path[8:11]) if path.startswith(b"/status/") else 200
                writer.write(answer(status, request_id))
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
    asyncio.run(main(int(sys.argv[1])))

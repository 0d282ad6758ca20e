"""An upstream that misbehaves on purpose, with raw sockets.

    python tests/integration/faults/badupstream.py --port P

/garbage   not HTTP at all                     -> the proxy answers 502 (protocol)
/reset     closes without answering            -> 502 (connect)
/truncate  200 with Content-Length 100000, sends 1000 bytes, closes -> the proxy aborts the connection
/chunks    chunked 200, two chunks, then closes without the last chunk
/slow?s=N  answers after N seconds
anything else: 200 {"ok": true}
"""

from __future__ import annotations

import argparse
import asyncio


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            target = line.split(" ")[1]
            length = 0
            for h in head.split(b"\r\n")[1:]:
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if target.startswith("/api/new/garbage") or target.endswith("/garbage"):
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                await writer.drain()
                break
            if target.endswith("/reset"):
                break
            if target.endswith("/truncate"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\n" + b"a" * 1000)
                await writer.drain()
                await asyncio.sleep(0.2)
                break
            if target.endswith("/chunks"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)
                break
            if "/slow" in target:
                await asyncio.sleep(float(target.split("s=")[1]) if "s=" in target else 3)
            body = b'{"ok": true}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    asyncio.run(main(p.parse_args().port))

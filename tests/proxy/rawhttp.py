"""Raw-socket HTTP for tests that must send what no well-behaved client library would."""

from __future__ import annotations

import asyncio


async def exchange(port: int, data: bytes, wait_s: float = 5.0, then: bytes = b"") -> bytes:
    """Send `data` (and `then` after the first bytes of an answer); read until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(wait_s):
            if then:
                out += await reader.read(65536)
                writer.write(then)
                await writer.drain()
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])

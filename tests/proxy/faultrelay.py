"""A small HTTP/1.1 relay that injects network faults between the proxy and the real control API.

It does NOT imitate the control API: every request is forwarded unchanged to the real one, and
every answer the proxy gets is the real control API's. What the relay adds is what a network can
do to a call:

* `drop_answers = n` — the next n event batches (`POST /v1/edge/events`; other calls, such as
  the proxy's config polls, pass untouched) are forwarded and fully answered by the control API
  (so whatever it stores is committed), then the relay aborts the proxy's connection before a
  single byte of the answer reaches it: "the batch was stored, but the answer was lost".
* the control API being down shows up as it would on the wire: the relay cannot connect
  upstream and closes the proxy's connection.

It also logs each exchange (method, path, Idempotency-Key, request body, upstream status and
headers, dropped or not), so a test can see that the proxy retried with the very same key.
Framing is Content-Length only (what aiohttp's client and server send here); anything else fails
loudly, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

BATCHES = ("POST", "/v1/edge/events")


@dataclass
class Exchange:
    method: str
    path: str
    key: str  # the request's Idempotency-Key ("" if none)
    body: bytes
    status: int | None = None  # the control API's status; None: it could not be reached
    dropped: bool = False  # the answer was withheld and the connection aborted
    answer_headers: dict[str, str] | None = None  # the control API's (lower-cased names)

    @property
    def is_batch(self) -> bool:
        return (self.method, self.path.partition("?")[0]) == BATCHES

    def json(self) -> Any:
        return json.loads(self.body)


def _head(raw: bytes) -> tuple[str, dict[str, str]]:
    first, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise NotImplementedError("the fault relay frames by Content-Length only")
    return first, headers


async def _message(reader: asyncio.StreamReader) -> tuple[bytes, str, dict[str, str], bytes]:
    raw = await reader.readuntil(b"\r\n\r\n")
    first, headers = _head(raw)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return raw, first, headers, body


class FaultRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_answers = 0
        self.log: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def batches(self) -> list[Exchange]:
        """The event uploads, in order (the log also holds config polls)."""
        return [ex for ex in self.log if ex.is_batch]

    def keys(self) -> list[str]:
        """Idempotency-Key of every event upload, in order, repeats included."""
        return [ex.key for ex in self.batches()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                raw, request_line, headers, body = await _message(reader)
                method, path, _ = request_line.split(" ", 2)
                exchange = Exchange(method, path, headers.get("idempotency-key", ""), body)
                self.log.append(exchange)
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_reader, up_writer = upstream
                up_writer.write(raw + body)
                await up_writer.drain()
                resp_raw, status_line, resp_headers, resp_body = await _message(up_reader)
                exchange.status = int(status_line.split(" ", 2)[1])
                exchange.answer_headers = resp_headers
                if self.drop_answers > 0 and exchange.is_batch:
                    self.drop_answers -= 1
                    exchange.dropped = True
                    writer.transport.abort()  # RST: not a byte of the answer gets through
                    return
                writer.write(resp_raw + resp_body)
                await writer.drain()
                if resp_headers.get("connection", "").lower() == "close":
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return  # either side went away (an outage, or the proxy closed): close the other
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            if upstream is not None:
                upstream[1].transport.abort()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

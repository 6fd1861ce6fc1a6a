"""The HTTP connection itself, bounded in bytes and seconds before any request reaches the app.

uvicorn's httptools protocol accepts request heads of any size and waits for them forever, so one 100 MB header
or a client sending a byte every two seconds gets past every limit the app checks. This subclass closes a
connection whose head (request line and headers) grows past `max_header_bytes` or `max_headers` lines (431),
whose head does not arrive within `header_timeout` seconds, or whose body does not arrive within
`body_timeout` seconds after its head (408). Idle keep-alive connections close after uvicorn's own
`timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import Limits


def _plain(status: bytes, message: str) -> bytes:
    body = message.encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def bounded_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class that enforces the connection fields of the server's `Limits`
    (max_header_bytes, max_headers, header_timeout, body_timeout); uvicorn takes a protocol class as `http`."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._head_bytes, self._head_lines, self._in_head = 0, 0, True
            self._timer = self.loop.call_later(limits.header_timeout, self._expire, "request head")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > limits.max_header_bytes:
                    self._refuse(b"431 Request Header Fields Too Large",
                                 f"the request head exceeds {limits.max_header_bytes} bytes (--max-header-bytes)")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:  # a keep-alive connection's next request: a new head, a new clock
                self._in_head, self._head_bytes, self._head_lines = True, 0, 0
                self._arm(limits.header_timeout, "request head")

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_lines += 1
            if self._head_lines > limits.max_headers:
                return self._refuse(b"431 Request Header Fields Too Large",
                                    f"the request has more than {limits.max_headers} header lines")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._arm(limits.body_timeout, "request body")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._timer.cancel()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._timer.cancel()
            super().connection_lost(exc)

        def _arm(self, seconds: float, what: str) -> None:
            self._timer.cancel()
            self._timer = self.loop.call_later(seconds, self._expire, what)

        def _expire(self, what: str) -> None:
            self._refuse(b"408 Request Timeout", f"the {what} did not arrive in time (--header-timeout, --body-timeout)")

        def _refuse(self, status: bytes, message: str) -> None:
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
                self.transport.write(_plain(status, message))
            if self.cycle is not None:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

    return BoundedHttpToolsProtocol


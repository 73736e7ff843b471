"""How both servers listen (`vft serve`, `vft inference`): uvicorn over h11, with the two deadlines uvicorn lacks.

uvicorn closes a connection idle between two requests (its keep-alive timeout) but waits forever for the headers of
a request and for the rest of a body, so clients that trickle bytes (slow-loris) hold connections open for as long
as they like. Here a request's headers must arrive within ``VFT_HEADER_TIMEOUT`` seconds of its first byte (or of
the connection's opening), and a body may pause at most ``VFT_BODY_TIMEOUT`` seconds between two reads; an upload
that keeps sending runs as long as it needs. 0 turns either off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

log = logging.getLogger(__name__)

HEADERS_TOO_SLOW = b"the request headers did not arrive in time"
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(HEADERS_TOO_SLOW), HEADERS_TOO_SLOW)
)
# After the 408 the connection stays half-open this long, reading and dropping what the client still sends: closing
# with unread bytes makes the kernel send a reset, which can destroy the 408 before the client reads it.
LINGER_SECONDS = 2.0


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that drops a connection whose request headers take longer than ``header_timeout`` or
    whose body pauses longer than ``body_timeout`` (seconds; 0: no limit). Pauses of our own making (flow control
    while the app has not read what came) do not count."""

    header_timeout: float = 0.0
    body_timeout: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers", "body" or None
        self._body_seen = self.loop.time()
        self._lingering = False
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # the answer is sent; what comes after it is read only to be dropped
            return
        super().data_received(data)
        self._body_seen = self.loop.time()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Start the deadline for what the connection waits for now (h11's view of the client's side)."""
        state = self.conn.their_state
        if (
            state is h11.IDLE
        ):  # a request's headers are due; the clock starts with the first byte, not each one
            self._wait_for("headers", self.header_timeout)
        elif state is h11.SEND_BODY:
            self._wait_for("body", self.body_timeout)
        else:  # the request is in; answering it may take as long as it takes
            self._stop_watching()

    def _wait_for(self, what: str, timeout: float) -> None:
        if self._waiting_for == what:
            return
        self._stop_watching()
        if timeout > 0:
            self._waiting_for = what
            self._deadline = self.loop.call_later(timeout, self._expired)

    def _stop_watching(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._waiting_for = None

    def _expired(self) -> None:
        self._deadline = None
        if self._waiting_for == "body":
            if self.flow.read_paused:  # the app has not taken what came: the client is not the one pausing
                self._body_seen = self.loop.time()
            remaining = self._body_seen + self.body_timeout - self.loop.time()
            if remaining > 0:
                self._deadline = self.loop.call_later(remaining, self._expired)
                return
        what, self._waiting_for = self._waiting_for, None
        if self.transport.is_closing():
            return
        log.info(
            "closing the connection from %s: the request %s did not arrive in time", _peer(self.client), what
        )
        if what == "headers" and self.conn.trailing_data[0]:  # part of a request came: say why it ends
            self.transport.write(REQUEST_TIMEOUT)
            if self.transport.can_write_eof():
                self._lingering = True
                self.transport.write_eof()
                self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)
                return
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def protocol_for(settings: Settings) -> type[DeadlineH11Protocol]:
    """The protocol class with ``settings``' deadlines (uvicorn makes one instance per connection)."""
    return type(
        "DeadlineH11Protocol",
        (DeadlineH11Protocol,),
        {"header_timeout": settings.header_timeout, "body_timeout": settings.body_timeout},
    )


def run(app: Any, settings: Settings, *, host: str, port: int, log_level: str, **options: Any) -> None:
    """Serve ``app`` with uvicorn and ``settings``' deadlines until stopped."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, http=protocol_for(settings), **options)

"""The ingest tier's HTTP/1.1 server: an asyncio protocol on httptools' parser (uvloop's loop),
routing each request to ``app.ingest.handlers.Api`` and writing its answer. This is the edge:
every ``HttpError`` becomes its JSON answer here, anything else a logged 500, and every answer is
counted (``rowstream_ingest_requests_total{status}``, ``rowstream_ingest_events_total``).

Guarantees:

* requests of one connection are answered in the order they came (pipelined ones wait, and the
  connection stops reading while one waits);
* a body is at most ``MAX_BODY_BYTES``: a larger ``Content-Length``, or a body that grows past it,
  is answered 413 without reading the rest, and the connection closed;
* a request must arrive whole within ``body_timeout`` seconds of its first byte, else 408 and the
  connection closed; a connection idle for ``IDLE_SECONDS`` is closed;
* ``Expect: 100-continue`` is answered, so clients such as curl send their bodies at once.

Chosen by measurement over aiohttp, uvicorn and granian (docs/benchmark.md, "The front door").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any

import httptools

from app.ingest.errors import HttpError, TooLarge
from app.ingest.handlers import Answer, Api, Later, Request, Response
from app.model.events import MAX_BODY_BYTES
from app.observe import metrics

log = logging.getLogger("rowstream.ingest")

IDLE_SECONDS = 60.0  # a keep-alive connection with no request for this long is closed
_ROW_PREFIX = "/v1/apps/"


class Router:
    """(method, path) → the handler and its path arguments; 404 and 405 as ``HttpError``."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.exact: dict[str, dict[str, Callable[..., Answer]]] = {
            "/v1/updates": {"POST": api.post},
            "/healthz": {"GET": api.healthz},
            "/readyz": {"GET": api.readyz},
            "/metrics": {"GET": api.metrics},
            "/openapi.json": {"GET": api.openapi},
        }
        self.row: dict[str, Callable[..., Answer]] = {"PATCH": api.patch, "GET": api.get}

    @staticmethod
    def nothing(request: Request) -> Answer:
        raise HttpError(404, "nothing is served here yet")

    def __call__(self, request: Request) -> Answer:
        path = request.path
        methods = self.exact.get(path)
        args: tuple[str, ...] = ()
        if methods is None and path.startswith(_ROW_PREFIX):
            parts = path.split("/")  # "", "v1", "apps", app_id, "subscriptions", subscription_id
            if len(parts) == 6 and parts[4] == "subscriptions":
                methods, args = self.row, (parts[3], parts[5])
        if methods is None:
            raise HttpError(404, f"no such path: {path[:200]}")
        handler = methods.get(request.method)
        if handler is None:
            raise HttpError(
                405,
                f"{request.method} is not allowed here",
                headers=(("Allow", ", ".join(methods)),),
            )
        return handler(request, *args)


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())


_STATUS_LINES: dict[int, bytes] = {}


class Clock:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.header = b""
        self._second = -1

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self.header = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        return self.header


class Server:
    """What every connection shares: the router, the counters, the timeouts, the open
    connections (for the idle sweep and a graceful stop)."""

    def __init__(self, body_timeout: float, route: Callable[[Request], Answer] | None = None):
        self.route: Callable[[Request], Answer] = route or Router.nothing
        self.body_timeout = body_timeout
        self.connections: set[Connection] = set()
        self.clock = Clock()
        self._answered: Counter[int] = Counter()  # by status, since the last flush
        self._accepted = 0  # updates, since the last flush
        self._ticker: asyncio.TimerHandle | None = None
        self._ticks = 0
        self.owed = 0  # requests taken and not yet answered, over every connection
        self._all_answered = asyncio.Event()
        self._all_answered.set()

    def took(self) -> None:
        self.owed += 1
        self._all_answered.clear()

    def answered(self) -> None:
        self.owed -= 1
        if not self.owed:
            self._all_answered.set()

    async def all_answered(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every request taken is answered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), timeout)

    def connection(self) -> Connection:
        return Connection(self)

    def count(self, response: Response) -> None:
        """Counted here, added to the metrics once a second (a metric's increment in
        multiprocess mode costs a system call)."""
        self._answered[response.status] += 1
        self._accepted += response.updates

    def flush_counts(self) -> None:
        for status, answered in self._answered.items():
            metrics.INGEST_REQUESTS.labels(str(status)).inc(answered)
        if self._accepted:
            metrics.INGEST_EVENTS.inc(self._accepted)
        self._answered.clear()
        self._accepted = 0

    def start_ticking(self) -> None:
        """Once a second: the counts to the metrics; every tenth, the idle sweep."""
        loop = asyncio.get_running_loop()
        self.flush_counts()
        self._ticks += 1
        if self._ticks % 10 == 0:
            now = loop.time()
            for connection in list(self.connections):
                connection.sweep(now)
        self._ticker = loop.call_later(1.0, self.start_ticking)

    def stop_ticking(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.flush_counts()


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.loop = asyncio.get_running_loop()  # once: asking per request costs a system call
        self.queue: deque[tuple[Request, bool]] = deque()  # taken, waiting for the one before
        self.busy = False  # a request is being answered
        self.closing = False
        self.in_message = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_active = 0.0
        self._url = b""
        self._authorization = ""
        self._length = 0
        self._expect_continue = False
        self._body: list[bytes] = []
        self._size = 0

    # --- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        self.last_active = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self._cancel_timer()
        self._drop_queue()  # nobody to answer; the one being answered is counted when done

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(HttpError(400, "protocol upgrades are not served here"))
        except httptools.HttpParserError as exc:
            if not self.closing:  # a refusal (413) stops the parser mid-body: not the client's
                self._refuse(HttpError(400, f"malformed HTTP request: {exc}"))
        if self.in_message and self.timer is None and not self.closing:
            self.timer = self.loop.call_later(self.server.body_timeout, self._timed_out)

    # --- httptools' callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._url, self._authorization, self._length = b"", "", 0
        self._expect_continue, self._body, self._size = False, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            if not self._authorization:  # the first one, if a client sends two
                self._authorization = value.decode("latin-1")
        elif name == b"content-length":
            try:
                self._length = int(value)
            except ValueError:
                self._length = 0  # the parser refuses it itself
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        if self._length > MAX_BODY_BYTES:
            self._refuse(TooLarge(f"request body over {MAX_BODY_BYTES} bytes"))
        elif self._expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.closing:
            return
        self._size += len(chunk)
        if self._size > MAX_BODY_BYTES:  # a client that lied about (or omitted) its length
            self._refuse(TooLarge(f"request body over {MAX_BODY_BYTES} bytes"))
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self.in_message = False
        self._cancel_timer()
        path = self._url.partition(b"?")[0].decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(self.parser.get_method().decode(), path, self._authorization, body)
        keep_alive = self.parser.should_keep_alive()
        self.server.took()
        if self.busy:
            self.queue.append((request, keep_alive))
            self.transport.pause_reading()
        else:
            self._answer(request, keep_alive)

    # --- answering ----------------------------------------------------------------------------

    def _answer(self, request: Request, keep_alive: bool) -> None:
        self.busy = True
        try:
            answer = self.server.route(request)
        except HttpError as exc:
            answer = _error(exc)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            answer = _INTERNAL_ERROR
        if type(answer) is Later:
            answer.done.add_done_callback(partial(self._finish, answer.response, keep_alive))
        else:
            self._send(answer, keep_alive)  # type: ignore[arg-type]

    def _finish(self, response: Response | None, keep_alive: bool, done: asyncio.Future) -> None:
        try:
            result = done.result()
        except HttpError as exc:
            response = _error(exc)
        except BaseException:
            log.exception("unexpected error while answering")
            response = _INTERNAL_ERROR
        else:
            if response is None:
                response = result
        assert response is not None
        self._send(response, keep_alive)

    def _send(self, response: Response, keep_alive: bool, taken: bool = True) -> None:
        """Write ``response``; ``taken``: the answer to a request taken (not a refusal of one
        still coming in), so one owed answer fewer."""
        if taken:
            self.busy = False
            self.server.answered()
        self.server.count(response)
        if self.transport.is_closing():
            return
        status_line = _STATUS_LINES.get(response.status)
        if status_line is None:
            status_line = _STATUS_LINES[response.status] = _status_line(response.status)
        head = b"%bcontent-type: %b\r\ncontent-length: %d\r\n%b" % (
            status_line,
            response.content_type.encode(),
            len(response.body),
            self.server.clock.date(),
        )
        for name, value in response.headers:
            head += b"%b: %b\r\n" % (name.encode(), value.encode("latin-1"))
        if not keep_alive or self.closing:
            self.transport.write(head + b"connection: close\r\n\r\n" + response.body)
            self.transport.close()
            self._drop_queue()
            return
        self.transport.write(head + b"\r\n" + response.body)
        self.last_active = self.loop.time()
        if self.queue:
            request, keep_alive = self.queue.popleft()
            if not self.queue:
                self.transport.resume_reading()
            self._answer(request, keep_alive)

    def _refuse(self, error: HttpError) -> None:
        """Answer ``error`` now and close: the rest of what the client sends is not read."""
        self.closing = True
        self._cancel_timer()
        if self.busy or self.queue:  # an answer is owed first: close after it
            self._drop_queue()
            return
        self._send(_error(error), keep_alive=False, taken=False)

    def _timed_out(self) -> None:
        self.timer = None
        self._refuse(HttpError(408, f"request not received within {self.server.body_timeout:g} s"))

    def _drop_queue(self) -> None:
        for _ in self.queue:
            self.server.answered()
        self.queue.clear()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def sweep(self, now: float) -> None:
        """Close the connection when it has been idle too long."""
        if not self.in_message and not self.busy and now - self.last_active > IDLE_SECONDS:
            self.closing = True
            self.transport.close()

    def stop(self) -> None:
        """A graceful stop: close now when idle, else after the answer owed."""
        self.closing = True
        if not self.busy and not self.queue:
            self.transport.close()


def _error(exc: HttpError) -> Response:
    return Response(exc.status, exc.body(), exc.headers)


_INTERNAL_ERROR = Response(500, b'{"error":"internal error"}')

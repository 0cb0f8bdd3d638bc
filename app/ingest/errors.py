"""The one error type of the ingest tier: an HTTP answer other than 2xx, raised anywhere on a
request's path and turned into a response once, at the edge (``app.ingest.http``).

Every error body is ``{"error": one line, "problems": [{"where", "problem"}, ...]}`` (problems
only when there are some); nothing in it echoes a key or a submitted value.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

Problem = dict[str, str]


class HttpError(Exception):
    """``status`` with ``error`` (one line), optional ``problems`` and response headers."""

    def __init__(
        self,
        status: int,
        error: str,
        problems: Sequence[Problem] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(error)
        self.status, self.error = status, error
        self.problems, self.headers = list(problems), tuple(headers)

    def body(self) -> bytes:
        if self.problems:
            return orjson.dumps({"error": self.error, "problems": self.problems})
        return orjson.dumps({"error": self.error})


def invalid(problems: Sequence[Problem]) -> HttpError:
    """400: the request is not what the API takes; ``problems`` say where and why."""
    return HttpError(400, "invalid request", problems)


class Unavailable(HttpError):
    """503 with ``Retry-After``: the broker did not take the updates (or the producer's buffer
    is full). They may have been written already; a retry is safe (patches are idempotent)."""

    def __init__(self, error: str, retry_after: int = 1) -> None:
        super().__init__(503, error, headers=(("Retry-After", str(retry_after)),))


class TooLarge(HttpError):
    """413: the body, or one update, is larger than the API or the broker accepts."""

    def __init__(self, error: str) -> None:
        super().__init__(413, error)

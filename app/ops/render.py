"""Helpers shared by the operator views: JSON by default, a plain table when asked for text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faust.web import Request, Response, View


def wants_text(request: Request) -> bool:
    return request.query.get("format") == "text" or "text/plain" in request.headers.get(
        "Accept", ""
    )


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A fixed-width text table of ``rows`` (dicts) with the given columns."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(
            v.rjust(w) if v.replace(".", "").isdigit() else v.ljust(w) for v, w in zip(row, widths)
        )
        for row in cells
    ]
    return "\n".join(out) + "\n"


def answer(web: View, request: Request, body: Any, text: str, status: int = 200) -> Response:
    if wants_text(request):
        return web.text(text, status=status)
    return web.json(body, status=status)

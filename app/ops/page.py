"""The operator page at ``/ui/``: static HTML, CSS and JS (``app/ops/ui/``, uPlot vendored under
``ui/vendor/uplot`` with its licence and checksums). The files are public (they hold no data);
the page reads ``/lag/history``, ``/shards/history``, ``/lag/`` and ``/shards/`` with the
unscoped API key it asks for once."""

from __future__ import annotations

from pathlib import Path

from faust.web import Request, Response, View

from app.main import app

UI = Path(__file__).parent / "ui"

#: What ``/ui/<name>`` serves: the file and its content type. Nothing else is served.
FILES = {
    "": (UI / "index.html", "text/html; charset=utf-8"),
    "page.js": (UI / "page.js", "text/javascript; charset=utf-8"),
    "page.css": (UI / "page.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": (UI / "vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": (UI / "vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    "uPlot-LICENSE": (UI / "vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
}
_CONTENT = {name: (path.read_bytes(), kind) for name, (path, kind) in FILES.items()}


def _serve(web: View, name: str) -> Response:
    found = _CONTENT.get(name)
    if found is None:
        return web.json({"error": f"no such file: /ui/{name}"}, status=404)
    body, kind = found
    return web.bytes(body, headers={"Content-Type": kind, "Cache-Control": "no-cache"})


@app.page("/ui/")
async def operator_page(web: View, request: Request) -> Response:
    return _serve(web, "")


@app.page("/ui/{name}")
async def operator_page_file(web: View, request: Request, name: str) -> Response:
    return _serve(web, name)

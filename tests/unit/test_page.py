"""The operator page's files: the vendored chart library is exactly the pinned npm release (its
checksums, its licence beside it), and the page loads nothing from the internet."""

import hashlib
import json
import re
from pathlib import Path

from app.ops.access import PUBLIC_PREFIX

UI = Path(__file__).resolve().parents[2] / "app" / "ops" / "ui"
VENDOR = UI / "vendor" / "uplot"


def test_the_vendored_chart_library_is_the_pinned_release_with_its_licence():
    manifest = json.loads((VENDOR / "VENDOR.json").read_text())
    assert (manifest["package"], manifest["version"], manifest["license"]) == (
        "uplot", "1.6.32", "MIT",
    )  # fmt: skip
    for name, sha256 in manifest["files"].items():
        path = VENDOR / Path(name).name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, name
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_the_page_loads_nothing_from_the_internet_and_only_from_ui():
    html = (UI / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith(PUBLIC_PREFIX) for source in sources), sources
    script = (UI / "page.js").read_text()
    assert "http://" not in script and "https://" not in script
    assert re.findall(r'get\("([^"]+)"\)', script) == [
        "/lag/history", "/shards/history", "/lag/", "/shards/",
    ]  # fmt: skip

"""Debian's Chromium, headless, driven by Playwright (its Python package; the browser is the
system's, installed by ``make test-deps``: no browser download). The flags keep Chromium off the
network this machine does not have (without them it retries Google's hosts at every start)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import async_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: make test-deps installs it"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()

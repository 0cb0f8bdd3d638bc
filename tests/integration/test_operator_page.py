"""The operator page in a real browser (Debian's Chromium, headless): it asks for the key once,
then, while one shard is held and updates arrive, shows that shard's time lag rising while the
other shard flows; once released, both return to 0. A screenshot taken during the hold is saved
under .local/screenshots/."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from deploy.stack import ROOT
from tests.support.browser import chromium
from tests.support.helpers import KEY, LoadClient, Model, make_updates

SHARD0_APP = "6d000000-0000-4000-8000-000000000001"  # first byte 0x6d: shard 0 of 2
SHARD1_APP = "f2000000-0000-4000-8000-000000000002"  # 0xf2: shard 1
SCREENSHOT = ROOT / ".local" / "screenshots" / "operator-page-hold.png"


async def shown(page, shard: int) -> dict:
    """What the page's shard table says now about ``shard``."""
    row = page.locator(f'#shards tr[data-shard="{shard}"]')
    return {
        "up": await row.locator("td").nth(1).inner_text(),
        "time_lag": float(await row.locator("td.time-lag").inner_text()),
        "message_lag": int(await row.locator("td.message-lag").inner_text()),
    }


async def until(probe, check, timeout: float, what: str):
    """Poll ``probe()`` (what the page shows) until ``check`` holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await probe()
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {seen}")
        await asyncio.sleep(0.5)


def table_of(page):
    async def probe() -> dict:
        return {shard: await shown(page, shard) for shard in (0, 1)}

    return probe


def chart_of(page, chart: str):
    """The series the page drew last in ``chart``, by legend name."""

    async def probe() -> dict:
        return await page.evaluate(
            """(id) => { const c = window.rowstream.charts[id];
                         if (!c) return {};
                         return Object.fromEntries(c.names.map((n, i) => [n, c.data[i + 1]])); }""",
            chart,
        )

    return probe


def rose(values: list) -> bool:
    """At least three samples above 0, the newest the largest: a lag that is climbing."""
    lagging = [v for v in values or [] if v]
    return len(lagging) >= 3 and lagging[-1] == max(lagging) > lagging[0]


async def test_the_page_shows_a_held_shard_falling_behind_and_catching_up(pipeline_factory):
    pipeline = pipeline_factory(lag_interval="1")
    worker = pipeline.start_worker()
    ingest = pipeline.start_ingest()
    asked: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1100})

        async def answer(dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept(KEY)

        page.on("dialog", answer)
        await page.goto(f"http://127.0.0.1:{worker.web_port}/ui/")
        await page.wait_for_selector('#shards tr[data-shard="1"]', timeout=60_000)
        # every shard reported (not merely nothing known yet) and at 0
        await until(
            lambda: page.evaluate("Object.keys(window.rowstream.latest?.shards ?? {})"),
            lambda reported: sorted(reported) == ["0", "1"], 60, "both shards reported",
        )  # fmt: skip
        await until(
            table_of(page), lambda f: all(s["time_lag"] == 0 for s in f.values()), 60, "both at 0"
        )

        pipeline.hold_shard(1)
        model = Model()
        updates = make_updates([SHARD0_APP, SHARD1_APP], 20, total=400, hot_share=40, seed=31)
        await LoadClient(ingest.port, model).send(updates, batch=50)
        free = {row: props for row, props in model.rows.items() if row[0] == SHARD0_APP}
        await pipeline.wait_for_rows(free, 60, "shard 0's updates", only=SHARD0_APP)
        first = await until(
            table_of(page), lambda f: f[1]["time_lag"] >= 3 and f[1]["message_lag"] > 0, 60,
            "the held shard's time lag to show",
        )  # fmt: skip
        await until(
            table_of(page),
            lambda f: f[1]["time_lag"] >= first[1]["time_lag"] + 3
            and f[0]["time_lag"] == 0 and f[0]["message_lag"] == 0,
            30, "the held shard's time lag to rise while shard 0 is at 0",
        )  # fmt: skip
        await until(
            chart_of(page, "chart-time-lag"),
            lambda series: rose(series.get("shard 1")) and (series.get("shard 0") or [1])[-1] == 0,
            30, "the time-lag chart to draw shard 1 climbing and shard 0 at 0",
        )  # fmt: skip
        legend = await page.locator("#chart-time-lag .u-legend").inner_text()
        assert "shard 1" in legend and "shard 0" in legend
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        pipeline.hold_shard(1, held=False)
        await until(
            table_of(page),
            lambda f: all(s["time_lag"] == 0 and s["message_lag"] == 0 for s in f.values()),
            90,
            "both shards back to 0",
        )
        await pipeline.wait_for_rows(model.rows, 60, "every update applied")
        assert len(asked) == 1  # the key was asked for once, then kept
        status = await page.locator("#status").inner_text()
        assert status.startswith("updated"), status
    async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}") as session:
        async with session.get("/ui/") as page_file, session.get("/lag/history") as history:
            assert page_file.status == 200 and history.status == 401  # files open, data not

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


async def until(page, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        figures = {shard: await shown(page, shard) for shard in (0, 1)}
        if check(figures):
            return figures
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {figures}")
        await asyncio.sleep(0.5)


async def test_the_page_shows_a_held_shard_falling_behind_and_catching_up(pipeline_factory):
    pipeline = pipeline_factory(lag_interval="1")
    worker = pipeline.start_worker()
    asked: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1100})

        async def answer(dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept(KEY)

        page.on("dialog", answer)
        await page.goto(f"http://127.0.0.1:{worker.web_port}/ui/")
        await page.wait_for_selector('#shards tr[data-shard="1"]', timeout=60_000)
        await until(page, lambda f: all(s["time_lag"] == 0 for s in f.values()), 60, "all at 0")

        pipeline.hold_shard(1)
        model = Model()
        updates = make_updates([SHARD0_APP, SHARD1_APP], 20, total=400, hot_share=40, seed=31)
        await LoadClient(worker.web_port, model).send(updates, batch=50)
        free = {row: props for row, props in model.rows.items() if row[0] == SHARD0_APP}
        await pipeline.wait_for_rows(free, 60, "shard 0's updates", only=SHARD0_APP)
        first = await until(
            page, lambda f: f[1]["time_lag"] >= 3 and f[1]["message_lag"] > 0, 60,
            "the held shard's time lag to show",
        )  # fmt: skip
        later = await until(
            page, lambda f: f[1]["time_lag"] >= first[1]["time_lag"] + 3, 30,
            "the held shard's time lag to rise",
        )  # fmt: skip
        assert later[0]["time_lag"] == 0 and later[0]["message_lag"] == 0  # shard 0 flows
        assert await page.evaluate("window.rowstream.latest.samples") >= 5  # the charts' history
        held_series = await page.evaluate(
            """() => { const c = document.querySelector('#chart-time-lag .u-legend');
                       return c ? c.innerText : ''; }"""
        )
        assert "shard 1" in held_series and "shard 0" in held_series
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        pipeline.hold_shard(1, held=False)
        await until(
            page,
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

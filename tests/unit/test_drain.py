"""The drain loop's hand-over (app/drain.py): awaited directly while the flow runs, Faust's race
otherwise."""

import asyncio
from types import SimpleNamespace

import faust
import faust.transport.consumer

from app import drain


def consumer(suspended: bool):
    flag = asyncio.Event()
    if suspended:
        flag.set()
    return SimpleNamespace(suspend_flow=flag)


async def test_a_delivery_is_awaited_directly_while_the_flow_runs():
    assert faust.__version__ == "0.15.3"  # reasoned about this version's drain loop
    assert faust.transport.consumer.Consumer.wait_first is drain.wait_first
    self = consumer(suspended=False)
    delivered = []

    async def deliver():
        delivered.append(asyncio.current_task())
        return "done"

    tasks_before = len(asyncio.all_tasks())
    suspend = self.suspend_flow.wait()
    result = await drain.wait_first(self, deliver(), suspend)
    assert result.results == ["done"] and not result.stopped
    assert delivered == [asyncio.current_task()]  # in the loop's own task, no new one
    assert len(asyncio.all_tasks()) == tasks_before
    assert suspend.cr_frame is None  # closed, not left pending


async def test_while_the_flow_is_suspended_faust_races_the_delivery(monkeypatch):
    calls = []

    async def faust_wait_first(self, *coros, timeout=None):
        calls.append(len(coros))
        for coro in coros:
            coro.close()
        return "faust"

    monkeypatch.setattr(drain, "_faust_wait_first", faust_wait_first)
    self = consumer(suspended=True)

    async def deliver():
        return "done"

    assert await drain.wait_first(self, deliver(), self.suspend_flow.wait()) == "faust"
    assert calls == [2]

"""Unit tests of labeler.overload's decisions (issue 27): adaptive LIFO and
CoDel-style queue timeouts in Slots, and the gate's deadline rule. One
module's logic, on a real event loop; no durations are asserted."""

from __future__ import annotations

import asyncio

from labeler.config import Overload
from labeler.overload import AdmissionGate, Slots


async def _queue(slots: Slots, names: list[str], order: list[str], wait_s: float) -> list[asyncio.Task]:
    async def waiter(name: str) -> None:
        if await slots.acquire(wait_s):
            order.append(name)

    tasks = []
    for name in names:
        tasks.append(asyncio.ensure_future(waiter(name)))
        await asyncio.sleep(0)  # queued in this order
    return tasks


def _served_order(congestion_interval_s: float) -> list[str]:
    async def run() -> list[str]:
        slots = Slots(1, 10, congested_wait_s=60.0, congestion_interval_s=congestion_interval_s)
        assert await slots.acquire(0)
        order: list[str] = []
        tasks = await _queue(slots, ["a", "b", "c"], order, wait_s=60.0)
        for _ in range(3):
            slots.release(0.01)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    return asyncio.run(run())


def test_first_come_first_served_until_congested():
    assert _served_order(congestion_interval_s=3600) == ["a", "b", "c"]


def test_newest_waiter_first_when_congested():
    # Congested from the first waiter on (interval 0): adaptive LIFO. Each
    # release hands the slot to the newest waiter still queued.
    assert _served_order(congestion_interval_s=0.0) == ["c", "b", "a"]


def test_congested_queue_timeout_shrinks():
    async def run() -> tuple[bool, bool]:
        slots = Slots(1, 10, congested_wait_s=0.001, congestion_interval_s=0.0)
        assert await slots.acquire(0)
        first = asyncio.ensure_future(slots.acquire(60.0))  # queue was empty: not congested yet
        await asyncio.sleep(0)
        second = await slots.acquire(60.0)  # congested: waits 1 ms, not 60 s
        slots.release(0.01)
        return await first, second

    first, second = asyncio.run(run())
    assert first is True and second is False


def test_too_little_time_left_is_refused_at_once():
    async def run():
        gate = AdmissionGate(Overload(max_classify_in_flight=2))
        gate.slots.hold_s = 0.2  # calls take 200 ms now
        assert await gate.enter(None) is None  # one running
        refusal = await gate.enter(0.1)  # 100 ms left: refused without waiting
        admitted = await gate.enter(1.0)
        return gate, refusal, admitted

    gate, refusal, admitted = asyncio.run(run())
    assert refusal is not None and refusal.stage == "deadline" and refusal.retry_pushback_ms > 0
    assert "overload.max_classify_in_flight is 2" in refusal.message
    assert admitted is None and gate.slots.running == 2 and gate.refused == 1


def test_full_gate_and_disabled_gate():
    async def run():
        gate = AdmissionGate(Overload(max_classify_in_flight=1, max_classify_queued=1))
        assert await gate.enter(None) is None
        waiting = asyncio.ensure_future(gate.enter(None))
        await asyncio.sleep(0)
        full = gate.refusal_now()
        gate.leave(0.01)
        assert await waiting is None
        gate.leave(0.01)
        gate.update(Overload(enabled=False, max_classify_in_flight=1, max_classify_queued=1))
        admitted = [await gate.enter(0.001) for _ in range(5)]  # no bound when off
        return full, gate.refusal_now(), admitted, gate.slots.running

    full, when_off, admitted, running = asyncio.run(run())
    assert full is not None and full.stage == "classify"
    assert when_off is None and admitted == [None] * 5 and running == 5


def test_with_nothing_running_only_next_to_nothing_left_is_refused_as_deadline_exceeded():
    async def run():
        gate = AdmissionGate(Overload(max_classify_in_flight=2))
        gate.slots.hold_s = 0.2  # possibly stale: nothing runs to refresh it
        nearly_gone = await gate.enter(0.005)
        short = await gate.enter(0.05)  # shorter than the estimate, but admitted: it refreshes it
        return nearly_gone, short

    nearly_gone, short = asyncio.run(run())
    assert nearly_gone is not None and nearly_gone.stage == "expired"
    assert nearly_gone.code == "DEADLINE_EXCEEDED" and nearly_gone.retry_pushback_ms == 0
    assert short is None


def test_call_duration_estimate_rises_at_once_and_falls_slowly():
    slots = Slots(4)
    slots.hold_s = 0.1
    for _ in range(2):
        slots.running += 1
        slots.release(0.3)  # slower calls: the estimate follows at once
    risen = slots.hold_s
    slots.running += 1
    slots.release(0.01)  # one fast call barely moves it
    assert risen > 0.2 and slots.hold_s > 0.9 * risen

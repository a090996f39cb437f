"""Floods, in pure logic: the per-person command bucket (bot/core/flood.py) and the gate
that orders requests while the homeserver rate-limits the bot (bot/matrix/send_gate.py)."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.flood import MAX_SENDERS, CommandLimiter, Verdict
from bot.matrix import send_gate
from bot.matrix.send_gate import SYNC_LOOP, SendGate, acting_for


def test_a_burst_runs_then_one_notice_then_silence() -> None:
    limiter = CommandLimiter(burst=3, per_minute=60)
    verdicts = [limiter.take("@eve:x", 100.0) for _ in range(8)]
    assert verdicts == [Verdict.RUN] * 3 + [Verdict.WARN] + [Verdict.DROP] * 4
    assert limiter.take("@alice:x", 100.0) is Verdict.RUN  # other people are not touched


def test_silence_lasts_until_the_whole_burst_has_come_back() -> None:
    limiter = CommandLimiter(burst=3, per_minute=60)  # one a second
    for _ in range(4):
        limiter.take("@eve:x", 0.0)
    assert limiter.silenced_for("@eve:x", 0.0) == pytest.approx(3.0)
    # a token has come back, but a silenced sender waits for all three
    assert limiter.take("@eve:x", 1.5) is Verdict.DROP
    assert limiter.take("@eve:x", 2.9) is Verdict.DROP
    assert limiter.silenced_for("@eve:x", 2.9) == pytest.approx(0.1)
    assert [limiter.take("@eve:x", 3.0) for _ in range(4)] == [Verdict.RUN] * 3 + [Verdict.WARN]


def test_a_steady_sender_within_the_rate_is_never_refused() -> None:
    limiter = CommandLimiter(burst=2, per_minute=30)  # one every 2 s
    assert all(limiter.take("@host:x", t * 2.0) is Verdict.RUN for t in range(100))
    assert limiter.silenced_for("@host:x", 200.0) == 0.0


def test_a_flood_at_any_rate_gets_one_notice_and_a_burst_per_refill() -> None:
    limiter = CommandLimiter(burst=10, per_minute=30)  # refills in 20 s
    verdicts = [limiter.take("@eve:x", i / 50) for i in range(50 * 60)]  # 50 a second for a minute
    assert verdicts.count(Verdict.WARN) == 3
    assert verdicts.count(Verdict.RUN) == 30  # 10 per refill: 3 refills a minute


def test_the_bucket_map_stays_bounded() -> None:
    limiter = CommandLimiter(burst=1, per_minute=1)
    for i in range(MAX_SENDERS + 500):
        limiter.take(f"@u{i}:x", float(i) * 1e-6)
    assert len(limiter) <= MAX_SENDERS


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        CommandLimiter(burst=0, per_minute=10)
    with pytest.raises(ValueError):
        CommandLimiter(burst=1, per_minute=0)


# --- the send gate ------------------------------------------------------------------------

LIMITED = "429"


def _retry_after(answer: str) -> float | None:
    return 0.01 if answer == LIMITED else None


async def test_the_gate_does_nothing_while_the_homeserver_answers() -> None:
    gate = SendGate()
    running = 0
    most = 0
    release = asyncio.Event()

    async def call(_tries: int) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return "ok"

    tasks = [asyncio.create_task(gate.run(call, _retry_after)) for _ in range(5)]
    await asyncio.wait_for(_until(lambda: running == 5), 5)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == ["ok"] * 5
    assert most == 5 and gate.queued_count == 0 and not gate.throttled


async def test_after_a_429_requests_go_one_at_a_time_least_served_person_first() -> None:
    gate = SendGate(calm_seconds=60)
    order: list[str] = []
    running = 0
    most = 0
    first = True

    async def call(_tries: int) -> str:
        nonlocal running, most, first
        if first:  # the homeserver's first answer is a 429
            first = False
            return LIMITED
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        order.append(acting_for.get())
        running -= 1
        return "ok"

    async def request(person: str) -> str:
        acting_for.set(person)
        return await gate.run(call, _retry_after)

    flood = [asyncio.create_task(request("@eve:x")) for _ in range(6)]
    await asyncio.wait_for(_until(lambda: gate.throttled and gate.waiting >= 5), 5)
    ping = asyncio.create_task(request("@alice:x"))
    sync_loop = asyncio.create_task(request(SYNC_LOOP))
    await asyncio.wait_for(asyncio.gather(*flood, ping, sync_loop), 10)
    assert most == 1
    # the sync loop's request goes first; alice's after at most one of eve's six, never after all
    assert order[0] == SYNC_LOOP, order
    assert order.index("@alice:x") <= 2, order
    assert order.count("@eve:x") == 6 and gate.limited_count == 1


async def test_a_homeserver_that_limits_is_waited_out_and_no_request_is_lost() -> None:
    """A homeserver that takes one request per 20 ms (a 429 with the time left otherwise):
    twenty requests at once all get through, none given up, the gate never hurrying one
    out right after a 429."""
    loop = asyncio.get_running_loop()
    free_at = 0.0
    after_429: list[float] = []
    last_429 = None

    async def call(_tries: int) -> str:
        nonlocal free_at, last_429
        now = loop.time()
        if last_429 is not None:
            after_429.append(now - last_429[0] - last_429[1])
            last_429 = None
        if now < free_at:
            last_429 = (now, free_at - now)
            return f"429 {free_at - now}"
        free_at = now + 0.02
        return "ok"

    def retry_after(answer: str) -> float | None:
        return float(answer.split()[1]) if answer.startswith("429") else None

    gate = SendGate(calm_seconds=60)
    answers = await asyncio.wait_for(asyncio.gather(*(gate.run(call, retry_after) for _ in range(20))), 30)
    assert answers == ["ok"] * 20
    assert gate.limited_count >= 1
    assert min(after_429) >= -0.001  # the next request after a 429 waited as long as it was told


async def test_a_request_limited_every_time_gives_up_with_the_429() -> None:
    gate = SendGate()
    tries: list[int] = []

    async def call(before: int) -> str:
        tries.append(before)
        return LIMITED

    assert await asyncio.wait_for(gate.run(call, _retry_after), 10) == LIMITED
    assert tries == list(range(send_gate.MAX_TRIES))


async def test_a_waiter_cancelled_in_the_queue_does_not_stop_the_gate() -> None:
    gate = SendGate(calm_seconds=60)
    hold = asyncio.Event()
    first = True

    async def call(_tries: int) -> str:
        nonlocal first
        if first:
            first = False
            return LIMITED
        await hold.wait()
        return "ok"

    head = asyncio.create_task(gate.run(call, _retry_after))
    await asyncio.wait_for(_until(lambda: gate.throttled), 5)
    await asyncio.wait_for(_until(lambda: gate.waiting == 0 and not head.done()), 5)  # head is out
    doomed = asyncio.create_task(gate.run(call, _retry_after))
    after = asyncio.create_task(gate.run(call, _retry_after))
    await asyncio.wait_for(_until(lambda: gate.waiting == 2), 5)
    doomed.cancel()
    hold.set()
    assert await asyncio.wait_for(asyncio.gather(head, after), 5) == ["ok", "ok"]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.005)

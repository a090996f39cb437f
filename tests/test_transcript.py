"""Batching of the live transcript (pure formatting, and the batcher with a fake poster)."""

from __future__ import annotations

import asyncio

from bot.transcript import CaptionLine, TranscriptBatcher, render


def test_render_joins_consecutive_lines_of_one_speaker_and_escapes() -> None:
    plain, rich = render([CaptionLine("@a:x", "hello"), CaptionLine("@a:x", "there"),
                          CaptionLine("@b:x", "1 < 2")])
    assert plain == "🗒 @a:x: hello there\n@b:x: 1 < 2"
    assert "<b>@b:x</b>: 1 &lt; 2" in rich


async def test_batches_per_space_and_flushes_at_close() -> None:
    posted: list[tuple[str, str]] = []

    async def post(space_id: str, plain: str, rich: str) -> None:
        posted.append((space_id, plain))

    batcher = TranscriptBatcher(post, interval=3600, max_lines=3)
    batcher.start()
    batcher.add("s1", "@a:x", "one")
    batcher.add("s2", "@b:x", "two")
    batcher.add("s1", "@a:x", "  ")  # blank lines are dropped
    assert posted == []
    batcher.add("s1", "@c:x", "three")
    batcher.add("s1", "@a:x", "four")  # the third line of s1 wakes the batcher
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not posted and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert ("s1", "🗒 @a:x: one\n@c:x: three\n@a:x: four") in posted
    await batcher.close()
    assert ("s2", "🗒 @b:x: two") in posted
    assert len(posted) == 2

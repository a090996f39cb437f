"""docs/metrics.md names exactly the metrics the bot and the bridge export, and each
outcome a command can end with; the exposition parses with Prometheus' own parser."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import OUTCOMES, BotMetrics, BotSnapshot
from bridge.metrics import BridgeMetrics

DOC = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()


class FakeFeed:
    class out:  # noqa: N801 - shaped like the feed's attributes
        class health:  # noqa: N801
            state = "up"

    class book:  # noqa: N801
        edges: dict = {}


def exported() -> dict[str, str]:
    """Every chorus_ metric name as a scraper sees it (counters with _total), and its type."""
    bot = BotMetrics()
    bot.watch(lambda: BotSnapshot(0.0, True, 0.0, 0, 0, 0, 0, 0))
    bridge = BridgeMetrics()
    bridge.watch({}, "origin", "abc", lambda: FakeFeed)
    names = {}
    for registry in (bot.registry, bridge.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            if family.name.startswith("chorus_"):
                names[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return names


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    documented = dict(re.findall(r"^\| `(chorus_[a-z_]+)[^`]*` \| ([a-z]+) \|", DOC, re.MULTILINE))
    assert documented == exported()


def test_every_outcome_is_documented() -> None:
    listed = set(re.findall(r"^- `([a-z_]+)`:", DOC, re.MULTILINE))
    assert listed == set(OUTCOMES)


def test_the_alert_rules_use_only_metrics_that_exist() -> None:
    rules = DOC[DOC.index("## Example alert rules"):]
    used = set(re.findall(r"\b(chorus_[a-z_]+?)(?:_bucket)?\b", rules))
    names = set(exported())
    assert used and used <= names, used - names

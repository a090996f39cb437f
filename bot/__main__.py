"""``python -m bot``: run Chorus, migrate the database, import followers, write the docs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from bot.config import ConfigError, load_settings
from bot.files import PRIVATE_UMASK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus", description="Live audio spaces for Matrix.")
    parser.add_argument("--config", "-c", default="config.toml", help="config file (default: config.toml)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the bot (and the embedded bridge; a local Synapse if no homeserver is set)")
    sub.add_parser("migrate", help="upgrade the database schema to the newest migration")
    imp = sub.add_parser("import-followers", help="load follower counts from a CSV file: user id, count")
    imp.add_argument("csv", type=Path)
    docs = sub.add_parser("docs", help="write docs/commands.md from the command registry")
    docs.add_argument("--check", action="store_true", help="fail if docs/commands.md is out of date")
    args = parser.parse_args(argv)

    if args.cmd == "docs":
        return _docs(args.check)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    from bot.logs import configure_logging

    os.umask(PRIVATE_UMASK)  # the database, log, nio store and recordings are the bot's alone
    configure_logging(settings.logging.level, settings.logging.format, settings.logging.file)
    if args.cmd == "run":
        from bot.bridge_http import BridgeAuthError
        from bot.runner import serve

        try:
            asyncio.run(serve(settings))
        except (ConfigError, BridgeAuthError) as exc:
            print(f"chorus: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
        return 0
    from bot.db.engine import make_engine, upgrade

    engine = make_engine(settings.database.url)
    upgrade(engine)
    if args.cmd == "migrate":
        print(f"database at the newest schema: {engine.url.render_as_string()}")
        return 0
    if args.cmd == "import-followers":
        from bot.core.followers_csv import ImportError_, parse_counts
        from bot.db.store import Store

        try:
            counts = parse_counts(args.csv.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"chorus: cannot read {args.csv}: {exc.strerror}", file=sys.stderr)
            return 2
        except ImportError_ as exc:
            print(f"chorus: {args.csv}: {exc}", file=sys.stderr)
            return 2
        store = Store(engine)
        store.import_follower_counts(counts)
        store.audit("cli", "mod.import-followers", None, None, f"{len(counts)} users from {args.csv}")
        print(f"imported follower counts for {len(counts)} users")
        return 0
    return 1  # pragma: no cover


def _docs(check: bool) -> int:
    from bot.commands import registry
    from bot.commands.registry import markdown_reference

    path = Path(__file__).resolve().parents[1] / "docs" / "commands.md"
    text = markdown_reference(registry) + "\n"
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print("docs/commands.md is out of date: run python -m bot docs", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

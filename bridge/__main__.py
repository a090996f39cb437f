"""``python -m bridge [--config config.toml]``: run the audio bridge as its own service."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .app import create_app
from .settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge", description=__doc__)
    parser.add_argument("config", nargs="?", default=None,
                        help="config file with a [bridge] section (default: config.toml)")
    parser.add_argument("--config", "-c", dest="config_option", default=None,
                        help="the same, as an option (like python -m bot)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config_option or args.config or "config.toml")
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(create_app(settings), host=settings.listen_host, port=settings.listen_port,
                shutdown_timeout=5.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m bridge [--config config.toml]``: run the audio bridge as its own service."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import signal
import sys

from .app import start_embedded
from .settings import BridgeSettings, SettingsError, load_settings, resolved_public_url

log = logging.getLogger("bridge")

#: a token or secret in a query string or an Authorization header
_CREDENTIAL_RE = re.compile(r"((?:access_)?token=|[Bb]earer\s+)[^\s&\"',;]+")


class RedactCredentials(logging.Filter):
    """Replace the shared secret, ``token=…`` values and bearer credentials in log
    lines with ``<redacted>`` (a second fence: the bridge does not log them itself)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = _CREDENTIAL_RE.sub(r"\1<redacted>", message)
        if self.secret:
            clean = clean.replace(self.secret, "<redacted>")
        if clean != message:
            record.msg, record.args = clean, None
        return True


async def serve(settings: BridgeSettings) -> None:
    """Run until SIGINT or SIGTERM, through the same guarded server as the embedded bridge."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner, port = await start_embedded(settings)
    log.info("bridge listening on %s:%d (public %s, %s)", settings.listen_host, port,
             resolved_public_url(settings.public_url, settings.listen_host, port), settings.role)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge", description=__doc__)
    parser.add_argument("config", nargs="?", default=None,
                        help="config file with a [bridge] section (default: config.toml)")
    parser.add_argument("--config", "-c", dest="config_option", default=None,
                        help="the same, as an option (like python -m bot)")
    parser.add_argument("--edge", action="store_true",
                        help='run as an edge (as [bridge] role = "edge"): serve the listeners of '
                             "the spaces an origin publishes on Redis (redis_url)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config_option or args.config or "config.toml")
        if args.edge:
            settings = dataclasses.replace(settings, role="edge")
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    os.umask(0o077)  # recordings, clips and transcripts: new files 0600, folders 0700
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactCredentials(settings.shared_secret))
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

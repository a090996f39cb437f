"""The bot's chat commands. Importing this package registers every family."""

from . import announce, basic, mod, schedule, social, spaces, tipjar  # noqa: F401 - registration side effect
from .registry import registry

__all__ = ["registry"]

"""The bot's chat commands. Importing this package registers every family."""

from . import basic, mod, social, spaces, tipjar  # noqa: F401 - registration side effect
from .registry import registry

__all__ = ["registry"]

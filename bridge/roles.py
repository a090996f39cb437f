"""The roles of a space on the wire: the one spelling the bridge, its tokens and the bot's
bridge client use. The bot's rules name the same four in bot/core/model.py's ``Role``
(kept equal by tests/test_rules.py)."""

#: roles that may send audio
AUDIO_ROLES = frozenset({"host", "cohost", "speaker"})
#: every role; anyone the bot names none of is a listener
ROLES = AUDIO_ROLES | {"listener"}

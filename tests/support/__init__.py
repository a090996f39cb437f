"""Test support code: a real Synapse homeserver (``tests.support.synapse``) and Matrix users."""

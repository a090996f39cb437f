import base64
import json

import pytest

from bridge import tokens
from bridge.tokens import TokenError

SECRET = "s3cret-for-tests-only"


def test_good_token_round_trips():
    tok = tokens.mint(SECRET, "space1", "@alice:example.org", "speaker", 60, now=1000)
    claims = tokens.verify(SECRET, tok, "space1", now=1030)
    assert claims.space == "space1"
    assert claims.user == "@alice:example.org"
    assert claims.role == "speaker"
    assert claims.exp == 1060


def test_forged_signature_is_refused():
    tok = tokens.mint("another-secret-value", "space1", "@mallory:x", "host", 60)
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, tok, "space1")
    assert err.value.reason == tokens.REASON_BAD_SIGNATURE


def test_tampered_payload_is_refused():
    tok = tokens.mint(SECRET, "space1", "@bob:x", "listener", 60)
    body, sig = tok.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "host"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, f"{forged}.{sig}", "space1")
    assert err.value.reason == tokens.REASON_BAD_SIGNATURE


def test_expired_token_is_refused():
    tok = tokens.mint(SECRET, "space1", "@bob:x", "listener", 60, now=1000)
    tokens.verify(SECRET, tok, "space1", now=1059)
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, tok, "space1", now=1060)
    assert err.value.reason == tokens.REASON_EXPIRED


def test_token_for_another_space_is_refused():
    tok = tokens.mint(SECRET, "space1", "@bob:x", "speaker", 60)
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, tok, "space2")
    assert err.value.reason == tokens.REASON_WRONG_SPACE


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c", "!!!.###", "e30.", ".e30", "x" * 5000])
def test_malformed_tokens_are_refused(bad):
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, bad, "space1")
    assert err.value.reason == tokens.REASON_MALFORMED


def test_signed_garbage_payload_is_malformed():
    body = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(tokens._sign(SECRET, body)).rstrip(b"=").decode()
    with pytest.raises(TokenError) as err:
        tokens.verify(SECRET, f"{body}.{sig}")
    assert err.value.reason == tokens.REASON_MALFORMED


def test_mint_rejects_unknown_role_and_bad_ttl():
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "s", "@u:x", "admin", 60)
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "s", "@u:x", "speaker", 0)

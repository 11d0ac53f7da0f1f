"""The webhook signature covers a timestamp: `verify_signature` accepts a fresh signature of the exact body
and refuses old, future, malformed and wrong ones (pinned reasons)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from alerts.sinks.webhook import SignatureError, sign, verify_signature

SECRET = b"whsec-test"
OLD_SECRET = b"whsec-old"
BODY = b'{"alert_id":"G-highhigh.XMG0002.1","transition":"firing"}'
NOW = 1_700_000_000


def mac(secret: bytes, t: int, body: bytes = BODY) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_sign_is_stripe_scheme_over_time_dot_body():
    assert sign(SECRET, BODY, now=NOW + 0.9) == f"t={NOW},v1={mac(SECRET, NOW)}"
    assert sign(SECRET.decode(), BODY, now=NOW) == sign(SECRET, BODY, now=NOW)


VALID = [
    ("fresh", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW),
    ("299 s old", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW + 299),
    ("exactly at the tolerance", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW + 300),
    ("clock skew 200 s behind the sender", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW - 200),
    ("rotation: old and new secret, new second", f"t={NOW},v1={mac(OLD_SECRET, NOW)},v1={mac(SECRET, NOW)}", BODY, NOW),
    ("rotation: new secret first", f"t={NOW},v1={mac(SECRET, NOW)},v1={mac(OLD_SECRET, NOW)}", BODY, NOW),
    ("spaces after commas, other schemes ignored", f"t={NOW}, v0=abc, v1={mac(SECRET, NOW)}", BODY, NOW),
    ("order of t and v1", f"v1={mac(SECRET, NOW)},t={NOW}", BODY, NOW),
]


@pytest.mark.parametrize("case, header, body, now", VALID, ids=[c[0] for c in VALID])
def test_valid_signatures_pass(case, header, body, now):
    assert verify_signature(header, body, SECRET, now=now) is True


INVALID = [
    ("old: 301 s", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW + 301,
     "signature too old: made 301 s ago, tolerance 300 s"),
    ("old: a day, replayed capture", f"t={NOW},v1={mac(SECRET, NOW)}", BODY, NOW + 86_400,
     "signature too old: made 86400 s ago, tolerance 300 s"),
    ("future: 301 s ahead", f"t={NOW + 301},v1={mac(SECRET, NOW + 301)}", BODY, NOW,
     "signature from the future: 301 s ahead, tolerance 300 s"),
    ("wrong secret", f"t={NOW},v1={mac(b'guess', NOW)}", BODY, NOW,
     "signature does not match the body and secret"),
    ("tampered body", f"t={NOW},v1={mac(SECRET, NOW)}", BODY.replace(b"firing", b"resolved"), NOW,
     "signature does not match the body and secret"),
    ("time changed, mac kept", f"t={NOW + 60},v1={mac(SECRET, NOW)}", BODY, NOW + 60,
     "signature does not match the body and secret"),
    ("rotation: neither secret is ours", f"t={NOW},v1={mac(OLD_SECRET, NOW)},v1={mac(b'other', NOW)}", BODY, NOW,
     "signature does not match the body and secret"),
    ("old scheme: sha256=hmac(body)",
     "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(), BODY, NOW,
     "malformed signature header: it needs exactly one t=<unix seconds>"),
    ("empty header", "", BODY, NOW, "no signature header"),
    ("no header", None, BODY, NOW, "no signature header"),
    ("no t", f"v1={mac(SECRET, NOW)}", BODY, NOW,
     "malformed signature header: it needs exactly one t=<unix seconds>"),
    ("two t", f"t={NOW},t={NOW + 1},v1={mac(SECRET, NOW)}", BODY, NOW,
     "malformed signature header: it needs exactly one t=<unix seconds>"),
    ("t not a number", f"t=yesterday,v1={mac(SECRET, NOW)}", BODY, NOW,
     "malformed signature header: t='yesterday' is not whole unix seconds"),
    ("t negative", f"t=-5,v1={mac(SECRET, NOW)}", BODY, NOW,
     "malformed signature header: t='-5' is not whole unix seconds"),
    ("t fractional", f"t={NOW}.5,v1={mac(SECRET, NOW)}", BODY, NOW,
     f"malformed signature header: t='{NOW}.5' is not whole unix seconds"),
    ("no v1", f"t={NOW}", BODY, NOW, "malformed signature header: no v1= signature"),
    ("empty v1", f"t={NOW},v1=", BODY, NOW, "malformed signature header: 'v1=' is not name=value"),
    ("item without =", f"t={NOW},v1{mac(SECRET, NOW)}", BODY, NOW,
     f"malformed signature header: 'v1{mac(SECRET, NOW)}' is not name=value"),
    ("non-ASCII v1", f"t={NOW},v1=\u00e9\u00e9", BODY, NOW, "signature does not match the body and secret"),
]


@pytest.mark.parametrize("case, header, body, now, reason", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_signatures_are_refused_with_the_reason(case, header, body, now, reason):
    with pytest.raises(SignatureError) as info:
        verify_signature(header, body, SECRET, now=now)
    assert str(info.value) == reason


def test_tolerance_is_a_parameter():
    header = sign(SECRET, BODY, now=NOW)
    assert verify_signature(header, BODY, SECRET, tolerance_s=10, now=NOW + 10)
    with pytest.raises(SignatureError, match="too old"):
        verify_signature(header, BODY, SECRET, tolerance_s=10, now=NOW + 11)


def test_round_trip_with_the_current_clock():
    assert verify_signature(sign(SECRET, BODY), BODY, SECRET)

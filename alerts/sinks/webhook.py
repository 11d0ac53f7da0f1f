"""Webhook sink: the notice as a JSON POST, signed with a timestamped HMAC-SHA256 when a secret is configured.

Header (Stripe's scheme): `X-Citywatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
The signature covers the time it was made, so a captured notice cannot be replayed later: receivers check
it with `verify_signature`, which refuses a signature older (or further ahead) than its tolerance. A
receiver still dedups by `Idempotency-Key`: a retry is signed again, with a new time, but keeps its key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable

from alerts.model import Notice
from alerts.sinks.robot_http import exchange

SIGNATURE_HEADER = "X-Citywatch-Signature"
KEY_HEADER = "Idempotency-Key"
SCHEME = "v1"
# How far a signature's time may be from the receiver's clock (either way), by default: five minutes,
# as Stripe's receivers use; it bounds a replay and allows for clock skew and a slow network.
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A webhook signature that must not be trusted: malformed, too old, from the future, or wrong."""


def _mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _key(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: bytes | str, body: bytes, now: float | None = None) -> str:
    """The header value for `body` signed at `now` (unix seconds; default the current time):
    `t=<whole seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    t = int(time.time() if now is None else now)
    return f"t={t},{SCHEME}={_mac(_key(secret), t, body)}"


def verify_signature(header: str | None, body: bytes, secret: bytes | str, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """Check an `X-Citywatch-Signature` header for the exact request `body` (bytes as received) with `secret`.

    Valid when the header holds one `t=<unix seconds>` within `tolerance_s` of `now` (default the current
    time), either way, and at least one `v1=` value that is the HMAC-SHA256 of `"<t>.<body>"` (a sender
    that rotates its secret may send one v1 per secret; unknown schemes are ignored). Compares in
    constant time. Returns True; raises SignatureError saying why otherwise (never returns False).
    """
    if not header or not isinstance(header, str):
        raise SignatureError("no signature header")
    t_values: list[str] = []
    v1: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name or not value:
            raise SignatureError(f"malformed signature header: {item.strip()!r} is not name=value")
        if name == "t":
            t_values.append(value)
        elif name == SCHEME:
            v1.append(value)
    if len(t_values) != 1:
        raise SignatureError("malformed signature header: it needs exactly one t=<unix seconds>")
    if not t_values[0].isascii() or not t_values[0].isdigit():
        raise SignatureError(f"malformed signature header: t={t_values[0]!r} is not whole unix seconds")
    if not v1:
        raise SignatureError(f"malformed signature header: no {SCHEME}= signature")
    t = int(t_values[0])
    now = time.time() if now is None else now
    if now - t > tolerance_s:
        raise SignatureError(f"signature too old: made {now - t:.0f} s ago, tolerance {tolerance_s:g} s")
    if t - now > tolerance_s:
        raise SignatureError(f"signature from the future: {t - now:.0f} s ahead, tolerance {tolerance_s:g} s")
    expected = _mac(_key(secret), t, body).encode()
    # Every candidate is compared (no early exit), each in constant time; bytes, so that a non-ASCII
    # value is just a mismatch.
    matches = [hmac.compare_digest(expected, candidate.lower().encode()) for candidate in v1]
    if not any(matches):
        raise SignatureError("signature does not match the body and secret")
    return True


class WebhookSink:
    """POSTs each notice to `url`. 5xx, 408, 429 and network errors are retryable; other 4xx, a redirect
    (never followed) and an answer over 64 KiB are not (alerts/sinks/robot_http.py: `exchange`).

    secret: the HMAC key; None sends the notice unsigned (`check-config` warns about such a sink).
    Each attempt is signed at the time it is sent, so a retry minutes later is still within a
    receiver's tolerance.
    """

    def __init__(self, url: str, secret: bytes | None = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time, body: Callable[[Notice], bytes] | None = None):
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock
        # body(notice) -> bytes: a configured body template (alerts/sinks/channels.py); None posts the payload.
        self.body = body

    def send(self, notice: Notice) -> None:
        if self.body is not None:
            body = self.body(notice)
        else:
            body = json.dumps(notice.payload, sort_keys=True, separators=(",", ":")).encode()
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header(KEY_HEADER, notice.key)
        if self.secret is not None:
            req.add_header(SIGNATURE_HEADER, sign(self.secret, body, self.clock()))
        exchange(req, self.timeout_s, f"webhook {self.url}")

    def close(self) -> None:
        pass

"""Webhook sink: the notice as a JSON POST, signed with HMAC-SHA256 when a secret is configured."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request

from alerts.model import Notice
from alerts.sink import SinkError

SIGNATURE_HEADER = "X-Citywatch-Signature"
KEY_HEADER = "Idempotency-Key"


def signature(secret: bytes, body: bytes) -> str:
    """The header value a receiver recomputes: `sha256=<hex hmac of the exact body>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs each notice to `url`. 5xx, 408, 429 and network errors are retryable; other 4xx are not."""

    def __init__(self, url: str, secret: bytes | None = None, timeout_s: float = 5.0):
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s

    def send(self, notice: Notice) -> None:
        body = json.dumps(notice.payload, sort_keys=True, separators=(",", ":")).encode()
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header(KEY_HEADER, notice.key)
        if self.secret is not None:
            req.add_header(SIGNATURE_HEADER, signature(self.secret, body))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code in (408, 429)
            raise SinkError(f"webhook {self.url}: HTTP {exc.code}", retryable) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise SinkError(f"webhook {self.url}: {getattr(exc, 'reason', exc)}", True) from None

    def close(self) -> None:
        pass

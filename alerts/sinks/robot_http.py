"""One JSON POST for the chat robots and the SMS gateway: the response JSON, or SinkError saying whether
a retry could succeed (network errors, 5xx, 408 and 429 can; other 4xx cannot)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from alerts.sinks.base import SinkError, retryable_status


def post_json(url: str, body: bytes, timeout_s: float, what: str, headers: dict[str, str] | None = None,
              method: str = "POST", content_type: str = "application/json") -> dict[str, Any]:
    """POST (or PUT) `body`; return the parsed JSON object of the answer. `what` names the sink in errors
    (never the URL: robot URLs carry their key)."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise SinkError(f"{what}: HTTP {exc.code}", retryable_status(exc.code)) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise SinkError(f"{what}: {getattr(exc, 'reason', exc)}", True) from None
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        # A proxy's error page instead of the API's answer: the API may answer later.
        raise SinkError(f"{what}: the answer is not JSON ({raw[:80]!r})", True) from None
    if not isinstance(answer, dict):
        raise SinkError(f"{what}: the answer is not a JSON object", True)
    return answer

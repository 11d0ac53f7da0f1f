"""The one HTTP exchange of every HTTP sink (webhook, InfluxDB, the chat robots, the SMS gateway), and the
JSON POST of the robots and the gateway: the answer, or SinkError saying whether a retry could succeed
(network errors, 5xx, 408 and 429 can; other 4xx cannot).

Redirects are never followed: urllib turns a redirected POST into a GET without its body (the notice is
lost, yet recorded as sent) and sends a robot's key in the query string on to the other host. Any 3xx is
refused for good, naming its Location. An answer is read up to MAX_ANSWER_BYTES and no further: a larger
one is refused, never read whole (a 400 MB answer once cost the service 800 MB of memory).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from alerts.sinks.base import SinkError, retryable_status
from alerts.sinks.deadline import EXCHANGE_TIMEOUTS, Deadline, watch

# The largest answer a sink reads (bytes): every API a sink talks to answers in well under 1 KiB.
MAX_ANSWER_BYTES = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        # None: urllib's default error handler raises HTTPError with the 3xx status.
        return None


class _WatchedHTTP(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        watch(self.sock)


class _WatchedHTTPS(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_WatchedHTTP, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_WatchedHTTPS, req, context=getattr(self, "_context", None))


# build_opener replaces its default handlers by these subclasses (redirects refused, sockets under the
# exchange's deadline); proxies from the environment stay.
_OPENER = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)


def _location(value: str | None) -> str:
    """The Location of a redirect without its query and fragment (they may carry a robot's key)."""
    if not value:
        return "no Location header"
    parts = urllib.parse.urlsplit(value)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) or repr(value[:80])


def exchange(req: urllib.request.Request, timeout_s: float, what: str,
             retryable: Callable[[int], bool] = retryable_status) -> bytes:
    """Send `req` once; return the answer's body (at most MAX_ANSWER_BYTES). `what` names the sink in errors.

    Raises SinkError: a 3xx (not followed: never retryable, a redirect does not fix itself), an answer
    larger than MAX_ANSWER_BYTES (not retryable: the receiver answers every notice that way), another
    HTTP error status (`retryable(status)`), or a network error or timeout (retryable), the exchange not
    over within EXCHANGE_TIMEOUTS x timeout_s included.
    """
    deadline = Deadline(EXCHANGE_TIMEOUTS * timeout_s)
    try:
        with deadline, _OPENER.open(req, timeout=timeout_s) as resp:
            raw: bytes = resp.read(MAX_ANSWER_BYTES + 1)
        if deadline.expired:  # cut off while it read: what it has is not the whole answer
            raise OSError("cut off")
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            raise SinkError(f"{what}: HTTP {exc.code} redirect to {_location(exc.headers.get('Location'))}, not "
                            "followed (a redirected POST loses its body); set the sink's url to the final address",
                            False) from None
        raise SinkError(f"{what}: HTTP {exc.code}", retryable(exc.code)) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        if deadline.expired:
            raise SinkError(f"{what}: no complete answer within {deadline.seconds:g} s (the server sends too "
                            "slowly); cut off", True) from None
        raise SinkError(f"{what}: {getattr(exc, 'reason', exc)}", True) from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise SinkError(f"{what}: the answer is larger than {MAX_ANSWER_BYTES // 1024} KiB (not read further)",
                        False)
    return raw


def post_json(url: str, body: bytes, timeout_s: float, what: str, headers: dict[str, str] | None = None,
              method: str = "POST", content_type: str = "application/json") -> dict[str, Any]:
    """POST (or PUT) `body`; return the parsed JSON object of the answer. `what` names the sink in errors
    (never the URL: robot URLs carry their key). Raises SinkError as `exchange` does, and (retryable)
    when the answer is not a JSON object."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    raw = exchange(req, timeout_s, what)
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        # A proxy's error page instead of the API's answer: the API may answer later.
        raise SinkError(f"{what}: the answer is not JSON ({raw[:80]!r})", True) from None
    if not isinstance(answer, dict):
        raise SinkError(f"{what}: the answer is not a JSON object", True)
    return answer

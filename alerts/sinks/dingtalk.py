"""DingTalk (钉钉) custom robot sink: a markdown message to `POST <url>?access_token=<token>`, signed.

Signing (加签): `&timestamp=<ms>&sign=<urlencoded base64 HMAC-SHA256(key=secret, msg="<ms>\\n<secret>")>`;
DingTalk refuses a timestamp more than an hour off. `at.atMobiles` @-mentions the person on duty, whose
mobile must also appear in the text for the mention to show. errcode 0 is accepted; 130101 (more than
20 messages a minute) is retried later, never dropped; other errcodes (310000 a bad signature or keyword,
300001 a bad token) are refused for good.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

from alerts.model import Notice
from alerts.notice_text import Renderer
from alerts.sinks.base import SinkError
from alerts.sinks.robot_http import post_json

if TYPE_CHECKING:
    from config.oncall import Person

RETRY_ERRCODES = {130101, -1}


def signature(secret: str, timestamp_ms: int) -> str:
    """The `sign` parameter (not yet URL-encoded): base64 of HMAC-SHA256(secret, "<ms>\\n<secret>")."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def signed_url(url: str, token: str, secret: str | None, timestamp_ms: int) -> str:
    query = {"access_token": token}
    if secret:
        query |= {"timestamp": str(timestamp_ms), "sign": signature(secret, timestamp_ms)}
    return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"


class DingtalkSink:
    def __init__(self, url: str, token: str, secret: str | None, renderer: Renderer, timeout_s: float = 5.0,
                 mention: bool = True, name: str = "dingtalk", clock: Callable[[], float] = time.time):
        self.url = url
        self.token = token
        self.secret = secret
        self.renderer = renderer
        self.timeout_s = timeout_s
        self.mention = mention
        self.name = name
        self.clock = clock

    def body(self, notice: Notice, person: Person | None = None) -> bytes:
        parts = self.renderer.render(notice.payload, person.name if person else None)
        text = parts["dingtalk"]
        mobile = person.channels.dingtalk if person is not None and self.mention else None
        if mobile:
            text += f"\n\n@{mobile}"
        title = text.splitlines()[0].lstrip("# ").strip() if text else notice.key
        return json.dumps({
            "msgtype": "markdown",
            "markdown": {"title": title, "text": text},
            "at": {"atMobiles": [mobile] if mobile else [], "isAtAll": False},
        }, ensure_ascii=False).encode()

    def send(self, notice: Notice, person: Person | None = None) -> str:
        # Signed at each attempt: a retry an hour later still carries a fresh timestamp.
        url = signed_url(self.url, self.token, self.secret, int(self.clock() * 1000))
        answer = post_json(url, self.body(notice, person), self.timeout_s, f"dingtalk sink {self.name}")
        code = answer.get("errcode")
        if code == 0:
            return f"dingtalk:{person.name}" if person else "dingtalk"
        raise SinkError(f"dingtalk sink {self.name}: errcode {code}: {answer.get('errmsg', '')}",
                        code in RETRY_ERRCODES)

    def close(self) -> None:
        pass

"""WeCom (企业微信) group robot sink: a markdown message to `POST <url>?key=<key>`.

The robot API answers `{"errcode": 0, "errmsg": "ok"}`; errcode 45009 means the robot's rate limit
(20 messages a minute) was hit, and -1 that the system is busy: both are retried later, never dropped.
Any other errcode (a wrong key, a message too long) is refused for good.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING

from alerts.model import Notice
from alerts.notice_text import Renderer
from alerts.sinks.base import SinkError
from alerts.sinks.robot_http import post_json

if TYPE_CHECKING:
    from config.oncall import Person

RETRY_ERRCODES = {45009, -1}
# WeCom markdown content is at most 4096 bytes (UTF-8).
MAX_CONTENT_BYTES = 4096


def markdown_body(content: str) -> bytes:
    data = content.encode("utf-8")
    if len(data) > MAX_CONTENT_BYTES:
        content = data[: MAX_CONTENT_BYTES - 3].decode("utf-8", "ignore") + "..."
    return json.dumps({"msgtype": "markdown", "markdown": {"content": content}}, ensure_ascii=False).encode()


class WecomSink:
    """Sends each notice to one WeCom group robot, rendered with `renderers[language]`."""

    def __init__(self, url: str, key: str, renderer: Renderer, timeout_s: float = 5.0, name: str = "wecom"):
        self.url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode({'key': key})}"
        self.renderer = renderer
        self.timeout_s = timeout_s
        self.name = name

    def send(self, notice: Notice, person: Person | None = None) -> str:
        text = self.renderer.render(notice.payload, person.name if person else None)["wecom"]
        answer = post_json(self.url, markdown_body(text), self.timeout_s, f"wecom sink {self.name}")
        code = answer.get("errcode")
        if code == 0:
            return f"wecom:{person.name}" if person else "wecom"
        retryable = code in RETRY_ERRCODES
        raise SinkError(f"wecom sink {self.name}: errcode {code}: {answer.get('errmsg', '')}", retryable)

    def close(self) -> None:
        pass

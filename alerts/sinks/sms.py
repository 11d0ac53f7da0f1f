"""SMS sink: a message through an HTTP gateway that the YAML describes (URL, method, auth header, body
template, and the response field whose value says the gateway accepted the message).

Auth `token`: header `<header>: <prefix><token>`. Auth `hmac`: header `<timestamp_header>: <unix s>` and
`<header>: <hex HMAC-SHA256(secret, "<t>.<body>")>`, signed at each attempt. A gateway's rate-limit
values (`retry_values`), 5xx and 429 are retried; any other answer is refused for good. A notice goes to
every number of `to`: it is delivered when one number accepted it (the others are named in what the
delivery reached), and fails only when every number failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alerts.model import Notice
from alerts.notice_text import BODY_FIELDS, Renderer, compile_source, render
from alerts.sinks.base import SinkError
from alerts.sinks.robot_http import post_json

if TYPE_CHECKING:
    from config.channels import SmsSink as SmsSpec
    from config.oncall import Person

log = logging.getLogger(__name__)


def hmac_signature(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def dotted(answer: dict[str, Any], path: str) -> Any:
    node: Any = answer
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class SmsSink:
    def __init__(self, spec: SmsSpec, renderer: Renderer, secret: str | None, name: str = "sms",
                 clock: Callable[[], float] = time.time):
        self.spec = spec
        self.renderer = renderer
        self.secret = secret
        self.name = name
        self.clock = clock
        self.body_template = compile_source(spec.body_template, f"alerting.sinks.{name}.body_template",
                                            known=BODY_FIELDS)

    def body(self, notice: Notice, to: str, person: Person | None = None) -> bytes:
        values = self.renderer.values(notice.payload, person.name if person else None)
        text = render(self.renderer.templates["sms"], values)
        return render(self.body_template, {**values, "text": text, "to": to}).encode("utf-8")

    def _send_one(self, notice: Notice, to: str, person: Person | None) -> None:
        body = self.body(notice, to, person)
        auth = self.spec.auth
        headers: dict[str, str] = {}
        if auth.kind == "token":
            headers[auth.header] = f"{auth.prefix}{self.secret}"
        elif auth.kind == "hmac":
            t = int(self.clock())
            headers[auth.timestamp_header] = str(t)
            headers[auth.header] = hmac_signature(self.secret or "", t, body)
        headers["Idempotency-Key"] = f"{notice.key}:{to}"
        what = f"sms sink {self.name}"
        answer = post_json(self.spec.url, body, self.spec.timeout_s, what, headers, self.spec.method,
                           self.spec.content_type)
        value = dotted(answer, self.spec.accepted_field)
        if value is not None and str(value) == self.spec.accepted_value:
            return
        retry = value is not None and str(value) in self.spec.retry_values
        raise SinkError(f"{what}: not accepted: {self.spec.accepted_field}={value!r} ({json.dumps(answer)[:200]})",
                        retry)

    def send(self, notice: Notice, person: Person | None = None) -> str:
        if person is not None:
            if not person.channels.sms:  # a team sends only to channels a person has; a direct call may not
                raise SinkError(f"sms sink {self.name}: {person.name} has no sms number in the roster", False)
            numbers = [person.channels.sms]
        else:
            numbers = list(self.spec.to)
        if not numbers:
            raise SinkError(f"sms sink {self.name}: no number (set `to`, or route through a team)", False)
        # Every number is tried: one refused (a number out of service) must not keep the alarm from the others.
        reached: list[str] = []
        failed: list[tuple[str, SinkError]] = []
        for number in numbers:
            try:
                self._send_one(notice, number, person)
            except SinkError as exc:
                failed.append((number, exc))
                continue
            reached.append(number)
        if not reached:
            # Retried while one number's failure may pass (the retry texts every number again: none got it).
            raise SinkError("; ".join(f"{number}: {exc}" for number, exc in failed) if len(failed) > 1
                            else str(failed[0][1]), any(exc.retryable for _, exc in failed))
        note = f"sms:{person.name}" if person else "sms:" + ",".join(reached)
        if failed:  # delivered to some numbers, refused for the others: the delivery log says both
            missed = "; ".join(f"{number} ({exc})" for number, exc in failed)
            log.error("sms sink %s: notice %s not delivered to %s", self.name, notice.key, missed)
            note += "; not reached: " + missed
        return note

    def close(self) -> None:
        pass

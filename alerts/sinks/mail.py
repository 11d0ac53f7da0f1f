"""Email sink: each notice as one mail over SMTP (STARTTLS, TLS or plain for a local relay) with a
text/plain and a text/html part, threaded per alert.

Threading (RFC 5322 Message-ID / In-Reply-To / References): the alert's firing notice is the thread's
root, `<alert_id@domain>`; every later notice of the alert has its own id and replies to that root, so
mail clients show one thread per alert. SMTP 4xx replies and connection failures are retried; 5xx (an
unknown mailbox, a refused sender) and a failed login are refused for good.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

from alerts.model import Notice
from alerts.notice_text import Renderer
from alerts.sinks.base import SinkError
from alerts.sinks.deadline import EXCHANGE_TIMEOUTS, Deadline, watch

if TYPE_CHECKING:
    from config.oncall import Person


def _safe(text: str) -> str:
    # Message-ID's left part: dot-atom text; alert ids hold letters, digits, '.', '-', '_' and ':'.
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in text)


def thread_ids(notice: Notice, domain: str) -> tuple[str, str | None]:
    """(Message-ID, the root it replies to or None) of a notice."""
    root = f"<{_safe(notice.alert_id)}@{domain}>"
    if notice.transition in ("firing", "test"):
        return root, None
    return f"<{_safe(notice.alert_id)}.{notice.seq}@{domain}>", root


class EmailSink:
    def __init__(self, host: str, port: int, security: str, sender: str, to: list[str], renderer: Renderer,
                 username: str | None = None, password: str | None = None, timeout_s: float = 10.0,
                 name: str = "email", ssl_context: ssl.SSLContext | None = None):
        self.host, self.port, self.security = host, port, security
        self.sender, self.to = sender, list(to)
        self.renderer = renderer
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.name = name
        self.domain = sender.rpartition("@")[2]
        self.ssl_context = ssl_context

    def message(self, notice: Notice, to: list[str], person: Person | None = None) -> EmailMessage:
        parts = self.renderer.render(notice.payload, person.name if person else None)
        msg = EmailMessage()
        msg["Subject"] = parts["email_subject"]
        msg["From"] = self.sender
        msg["To"] = ", ".join(to)
        msg["Date"] = formatdate(notice.ts_ns / 1e9, localtime=False)
        msg_id, root = thread_ids(notice, self.domain)
        msg["Message-ID"] = msg_id
        if root:
            msg["In-Reply-To"] = root
            msg["References"] = root
        msg["X-Citywatch-Key"] = notice.key
        msg.set_content(parts["email_text"] + "\n")
        msg.add_alternative(parts["email_html"] + "\n", subtype="html")
        return msg

    def send(self, notice: Notice, person: Person | None = None) -> str:
        if person is not None:
            if not person.channels.email:  # a team sends only to channels a person has; a direct call may not
                raise SinkError(f"email sink {self.name}: {person.name} has no email address in the roster", False)
            to = [person.channels.email]
        else:
            to = self.to
        if not to:
            raise SinkError(f"email sink {self.name}: no recipient (set `to`, or route through a team)", False)
        msg = self.message(notice, to, person)
        ctx = self.ssl_context or ssl.create_default_context()
        # The whole session within EXCHANGE_TIMEOUTS x timeout_s: a greeting trickled byte by byte held a 1 s
        # sink for 19 s (timeout_s bounds each read).
        deadline = Deadline(EXCHANGE_TIMEOUTS * self.timeout_s)
        try:
            with deadline:
                if self.security == "tls":
                    smtp: smtplib.SMTP = _SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=ctx)
                else:
                    smtp = _SMTP(self.host, self.port, timeout=self.timeout_s)
                with smtp:
                    if self.security == "starttls":
                        smtp.starttls(context=ctx)
                        if smtp.sock is not None:
                            watch(smtp.sock)  # the TLS socket that replaced the plain one
                    if self.username:
                        smtp.login(self.username, self.password or "")
                    smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            if deadline.expired:
                raise SinkError(f"email sink {self.name}: the server did not finish within {deadline.seconds:g} s "
                                "(it sends too slowly); cut off", True) from None
            raise SinkError(*self._classify(exc)) from None
        return f"email:{person.name}" if person else "email:" + ",".join(to)

    def _classify(self, exc: Exception) -> tuple[str, bool]:
        """(message, retryable) of an SMTP session's failure."""
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return f"email sink {self.name}: login refused ({exc.smtp_code})", False
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [c for c, _ in exc.recipients.values()]
            return f"email sink {self.name}: recipients refused {codes}", all(400 <= c < 500 for c in codes)
        if isinstance(exc, smtplib.SMTPResponseException):
            return f"email sink {self.name}: SMTP {exc.smtp_code} {exc.smtp_error!r}", 400 <= exc.smtp_code < 500
        return f"email sink {self.name}: {exc}", True

    def close(self) -> None:
        pass


class _SMTP(smtplib.SMTP):
    """smtplib's client with its socket under the send's Deadline (registered as it connects)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return watch(super()._get_socket(host, port, timeout))  # type: ignore[misc]  # smtplib's private hook


class _SMTP_SSL(smtplib.SMTP_SSL):  # noqa: N801 - smtplib's name
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return watch(super()._get_socket(host, port, timeout))  # type: ignore[misc]  # smtplib's private hook

"""Real local receivers for the notification channels: HTTP servers that answer as the WeCom and DingTalk
robot APIs document (errcode, rate limits, signature checks), an SMS gateway that checks the configured
HMAC, and an SMTP server (aiosmtpd) that keeps every mail. 127.0.0.1 on free ports."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from citywatch.localstack import free_port


class _HttpReceiver:
    """Records each request (query, headers, JSON body); `answer(query, headers, body)` gives the reply."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.requests: list[dict] = []
        self.accepted: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
                with outer.lock:
                    req = {"path": parts.path, "query": query, "headers": dict(self.headers), "raw": raw,
                           "body": json.loads(raw)}
                    outer.requests.append(req)
                    status, answer = outer.answer(req)
                    if answer.get("errcode") == 0 or answer.get("accepted"):
                        outer.accepted.append(req)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _handle
            do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, req: dict) -> tuple[int, dict]:
        raise NotImplementedError

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WecomRobot(_HttpReceiver):
    """`/cgi-bin/webhook/send?key=KEY`: errcode 93000 for a wrong key; 45009 for the first `rate_limited`
    messages (the robot's 20-a-minute limit), then 0."""

    def __init__(self, key: str, rate_limited: int = 0):
        self.key, self.rate_limited = key, rate_limited
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send"

    def answer(self, req):
        if req["query"].get("key") != self.key:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
        body = req["body"]
        if body.get("msgtype") != "markdown" or not isinstance(body.get("markdown", {}).get("content"), str):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 200, {"errcode": 45009, "errmsg": "api freq out of limit"}
        return 200, {"errcode": 0, "errmsg": "ok"}


class DingtalkRobot(_HttpReceiver):
    """`/robot/send?access_token=T&timestamp=ms&sign=S`: checks the token, the timestamp (within an hour)
    and the signature as DingTalk does (310000 "sign not match"); 130101 for the first `rate_limited`."""

    def __init__(self, token: str, secret: str, rate_limited: int = 0):
        self.token, self.secret, self.rate_limited = token, secret, rate_limited
        self.bad_signatures = 0
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/robot/send"

    def answer(self, req):
        q = req["query"]
        if q.get("access_token") != self.token:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        ts = q.get("timestamp", "")
        expected = base64.b64encode(hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3_600_000 or \
                not hmac.compare_digest(expected, q.get("sign", "")):
            self.bad_signatures += 1
            return 200, {"errcode": 310000, "errmsg": "sign not match"}
        if req["body"].get("msgtype") != "markdown":
            return 200, {"errcode": 40035, "errmsg": "invalid msgtype"}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        return 200, {"errcode": 0, "errmsg": "ok"}


class SmsGateway(_HttpReceiver):
    """Checks `X-Signature: hex HMAC-SHA256(secret, "<X-Timestamp>.<body>")`; answers
    {"result": {"status": "OK"}} or "SIGFAIL", and "THROTTLED" for the first `rate_limited`."""

    def __init__(self, secret: str, rate_limited: int = 0):
        self.secret, self.rate_limited = secret, rate_limited
        self.bad_signatures = 0
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/sms"

    def answer(self, req):
        h = {k.lower(): v for k, v in req["headers"].items()}
        expected = hmac.new(self.secret.encode(), f"{h.get('x-timestamp', '')}.".encode() + req["raw"],
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, h.get("x-signature", "")):
            self.bad_signatures += 1
            return 200, {"result": {"status": "SIGFAIL"}}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 200, {"result": {"status": "THROTTLED"}}
        return 200, {"result": {"status": "OK"}, "accepted": True}


class _Keep:
    def __init__(self):
        self.mails: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd in its own thread on `port`; `mails`: (recipients, parsed message) in arrival order."""

    def __init__(self, port: int):
        self.port = port
        self.handler = _Keep()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)
        self.controller.start()

    @property
    def mails(self):
        return self.handler.mails

    def stop(self) -> None:
        self.controller.stop()


def self_signed(directory) -> tuple[str, str]:
    """(cert, key) PEM files for 127.0.0.1, made by Debian's openssl."""
    import subprocess
    from pathlib import Path

    cert, key = Path(directory) / "smtp-cert.pem", Path(directory) / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


class SecureSmtpReceiver(SmtpReceiver):
    """aiosmtpd requiring STARTTLS (or implicit TLS) and a login with `username`/`password`."""

    def __init__(self, port: int, cert: str, key: str, mode: str, username: str, password: str):
        import ssl

        from aiosmtpd.smtp import AuthResult, LoginPassword

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.port = port
        self.handler = _Keep()
        self.logins: list[tuple[str, bool]] = []

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == username and \
                auth_data.password.decode() == password
            self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?", ok))
            return AuthResult(success=ok, handled=False)

        kw = dict(hostname="127.0.0.1", port=port, authenticator=authenticator, auth_required=True)
        if mode == "starttls":
            kw |= dict(tls_context=ctx, require_starttls=True, auth_require_tls=True)
        else:
            kw |= dict(ssl_context=ctx, auth_require_tls=False)
        self.controller = Controller(self.handler, **kw)
        self.controller.start()


class TokenSmsGateway(_HttpReceiver):
    """Accepts `Authorization: Bearer <token>` only; answers {"code": 0} or {"code": 401}."""

    def __init__(self, token: str):
        self.token = token
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    def answer(self, req):
        h = {k.lower(): v for k, v in req["headers"].items()}
        if h.get("authorization") != f"Bearer {self.token}":
            return 200, {"code": 401}
        return 200, {"code": 0, "accepted": True}

"""The demo's mail receiver: red gas alerts of the demo go to the on-call team `gas-duty` (config/oncall.yaml)
by email, to a local SMTP server (aiosmtpd, installed with the test extras) that keeps each mail in a Maildir
under the demo's directory, so the notices people would get can be read after the run."""

from __future__ import annotations

import email
import email.policy
import mailbox
import socket
from pathlib import Path

# The demo config's route for red gas alarms: tried before the shipped red route, and `continue` so that
# the shipped routes (MQTT, InfluxDB, terminal) still get them.
RED_GAS_ROUTE = ("      - match: {category: [gas], severity: [red]}\n"
                 "        receivers: [\"team:gas-duty\"]\n"
                 "        continue: true\n")
ROUTES_ANCHOR = "    routes:                     # child routes"


class DemoMail:
    """A running SMTP receiver on 127.0.0.1 and the Maildir it writes."""

    def __init__(self, maildir: Path, controller, port: int):
        self.maildir = maildir
        self.controller = controller
        self.port = port

    def stop(self) -> None:
        self.controller.stop()

    def summary(self) -> list[str]:
        box = mailbox.Maildir(self.maildir, create=False,
                              # typeshed types the file mailbox hands over as its own class, not a binary file
                              factory=lambda f: email.message_from_binary_file(f, policy=email.policy.default))  # type: ignore[call-overload]
        mails = sorted(box, key=lambda m: str(m["Date"]))
        lines = [f"mails to the people on duty: {len(mails)} in {self.maildir} (a Maildir: `mutt -f {self.maildir}`, "
                 f"or any mail reader)"]
        for msg in mails[:20]:
            lines.append(f"  to {msg['To']}: {msg['Subject']}")
        if len(mails) > 20:
            lines.append(f"  ... and {len(mails) - 20} more")
        return lines


def start(work: Path, config_dir: Path) -> DemoMail:
    """Start the receiver and point the demo's copy of the config at it: the `duty_mail` sink's port, and a
    route sending red gas alarms to `team:gas-duty`. Raises SystemExit when the config copy is not the
    shipped layout or aiosmtpd is missing."""
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Mailbox
    except ImportError:
        raise SystemExit("demo: aiosmtpd is missing; run `make setup` (it installs the test extras)") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alerts = config_dir / "alerts.yaml"
    text = alerts.read_text(encoding="utf-8")
    if "      port: 8025\n" not in text or ROUTES_ANCHOR not in text:
        raise SystemExit(f"demo: {alerts} has no duty_mail sink on port 8025 or no child routes to extend")
    text = text.replace("      port: 8025\n", f"      port: {port}\n", 1)
    head, tail = text.split(ROUTES_ANCHOR, 1)
    first_line_end = tail.index("\n") + 1
    text = head + ROUTES_ANCHOR + tail[:first_line_end] + RED_GAS_ROUTE + tail[first_line_end:]
    alerts.write_text(text, encoding="utf-8")
    maildir = work / "mail"
    mailbox.Maildir(maildir, create=True)
    controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    return DemoMail(maildir, controller, port)

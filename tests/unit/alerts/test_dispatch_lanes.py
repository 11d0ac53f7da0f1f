"""A sink's queue serves the most severe notice first (issue 17: a red alarm's notice waited 0.7 s behind a
hundred yellow ones), while each alert's notices keep their order (they share the lane of the alert's first
one still waiting)."""

from __future__ import annotations

import threading

from alerts.dispatch import Dispatcher
from alerts.model import Notice


class HeldSink:
    """Holds the send of notice `hold` (default: the first) until released; keeps the keys in the order sent."""

    def __init__(self, hold: str | None = None) -> None:
        self.sent: list[str] = []
        self.hold = hold
        self.release = threading.Event()
        self.started = threading.Event()

    def send(self, notice: Notice) -> None:
        if notice.key == self.hold or (self.hold is None and not self.sent):
            self.started.set()
            assert self.release.wait(10)
        self.sent.append(notice.key)

    def close(self) -> None:
        pass


def notice(alert: str, seq: int, severity: str, transition: str = "firing") -> Notice:
    return Notice(f"{alert}:{seq}", alert, seq, transition, 0, {"severity": severity, "category": "gas", "site_id": "S"})


def test_the_most_severe_waiting_notice_goes_first_and_an_alerts_notices_keep_their_order():
    sink = HeldSink()
    d = Dispatcher({"s": sink}, None, 0.01, 0.02, rates={"s": 1e6})
    d.submit(notice("X", 1, "yellow"), "s")
    assert sink.started.wait(10)  # X is being sent; the rest waits
    for n in [notice("A", 1, "yellow"), notice("B", 1, "yellow"), notice("C", 1, "red"),
              notice("A", 2, "red", "severity"), notice("D", 1, "blue"), notice("E", 1, "orange"),
              notice("C", 2, "red", "resolved"), notice("A", 3, "red", "resolved")]:
        d.submit(n, "s")
    assert d.pending() == 9  # the one being sent included
    sink.release.set()
    assert d.flush(10)
    d.stop()
    # Red first (C's two, in order), then orange, then yellow with A's later red notices behind A's first,
    # in A's order, then blue.
    assert sink.sent == ["X:1", "C:1", "C:2", "E:1", "A:1", "B:1", "A:2", "A:3", "D:1"]


def test_an_alert_whose_notices_all_went_takes_the_lane_of_its_next_one():
    sink = HeldSink(hold="Y:1")
    d = Dispatcher({"s": sink}, None, 0.01, 0.02, rates={"s": 1e6})
    d.submit(notice("A", 1, "yellow"), "s")
    assert d.flush(10)  # A's yellow notice went: A holds no lane any more
    d.submit(notice("Y", 1, "blue"), "s")
    assert sink.started.wait(10)  # Y is being sent; the rest waits
    d.submit(notice("B", 1, "yellow"), "s")
    d.submit(notice("A", 2, "red", "severity"), "s")  # A's next notice: the red lane, ahead of B
    sink.release.set()
    assert d.flush(10)
    d.stop()
    assert sink.sent == ["A:1", "Y:1", "A:2", "B:1"]

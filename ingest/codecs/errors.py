"""The one exception codecs raise: a payload that cannot be decoded, with a stable reason code."""

from __future__ import annotations


class DecodeError(Exception):
    """A payload could not be decoded.

    reason: stable snake_case code (it becomes the dead-letter record's `reason` and a metrics label)
    detail: human-readable explanation for the operator
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

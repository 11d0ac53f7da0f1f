"""Payload codecs: the JSON batch envelope (domain.md §3) and HJ 212-2017 frames (domain.md §1.5).

Codecs only turn bytes into Python values and back; validation against the inventory and physical
ranges lives in `ingest.validation`, and the whole topic + payload path in `ingest.decoder`.
"""

from ingest.codecs.errors import DecodeError

__all__ = ["DecodeError"]

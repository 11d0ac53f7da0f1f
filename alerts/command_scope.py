"""Partitioned mode: which worker answers an operator command. Every worker's command listener receives every
command (README "Cluster mode"); the operator gets one answer, from the worker that owns what the command names.

Decided from what each worker knows alone (the inventory and the devices it owns), so the command path never waits
on the network: an ack names its alert, whose id names its device (alerts.model.alert_id_for: RULE.DEVICE.STAMP),
and the device's owner answers it; what names no device of the inventory (an unknown id, a silence, which every
worker applies, a command that does not validate) is answered by the owner of the inventory's first device (the
lowest id), the same worker on every worker's reckoning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any


def alert_device(alert_id: str, devices: Collection[str]) -> str | None:
    """The inventory device an alert id names (RULE.DEVICE.STAMP; rule and device ids may hold dots): the longest
    run of its dot-separated parts that ends before the last part and is a device of `devices`; None if none is."""
    parts = alert_id.split(".")
    for start in range(1, len(parts) - 1):
        device = ".".join(parts[start:-1])
        if device in devices:
            return device
    return None


def answers_rest(owned: Collection[str] | None, devices: Collection[str]) -> bool:
    """Whether this worker answers the commands that name no device (owned: its devices; None: single mode)."""
    return owns_first(owned, min(devices) if devices else None)


def owns_first(owned: Collection[str] | None, first: str | None) -> bool:
    """`answers_rest` given the inventory's lowest device id `first` (None: no device), which a caller answering
    many commands works out once per inventory."""
    return owned is None or (first is not None and first in owned)


def answers_ack(alert_id: str, holds: bool, owned: Collection[str] | None, devices: Collection[str]) -> bool:
    """Whether this worker answers an ack of `alert_id`: it holds the alert open (`holds`), or the alert's device
    is one it owns (then "no alert" or "resolved" is the owner's answer), or the id names no device of the
    inventory and this worker answers the rest. owned: its devices (None: single mode, every device); devices:
    the inventory's device ids."""
    if owned is None or holds:
        return True
    device = alert_device(alert_id, devices)
    return device in owned if device is not None else answers_rest(owned, devices)


def shared_silence_id(account: str, command: dict[str, Any]) -> str:
    """The id of a silence command given without one, the same on every worker that applies it (each makes its
    own copy of the silence; an `unsilence` of the id the answer names must end them all): from its author and
    content, so the same silence sent again replaces the first."""
    body = json.dumps([account, {k: v for k, v in command.items() if k != "id"}], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:12]

"""Rule instances: which detector type runs with which id; type-specific keys are checked by the detectors registry."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from config.base import Strict

# Detector types whose active rows come from the clock (`advance`: the wall clock live, the event-time
# watermark in replay) rather than from readings. Their clear is a reading saying "the device is alive
# now", whatever that reading's own timestamp: the alert engine never drops it as a late row.
# tests/unit/detectors/test_deadman_clear.py checks this against every registered detector type.
# group_t2 and group_residual judge a bucket when the watermark closes it
TIME_DRIVEN_TYPES = frozenset({"deadman", "group_t2", "group_residual"})


class RuleSpec(Strict):
    # Extra keys are the detector's own parameters; `detectors.registry` validates them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: str = Field(min_length=1)
    kind: Literal["noise", "gas", "generic", "any"] = "any"
    enabled: bool = True
    # At most a day: `for_s: 1000w` (a typo for 1000s) was taken and silently kept the rule from ever firing.
    for_s: float = Field(0, ge=0, le=86400)
    clear_for_s: float = Field(0, ge=0, le=86400)

    @property
    def time_driven(self) -> bool:
        """Whether the rule's detector raises from the clock, not from readings (TIME_DRIVEN_TYPES)."""
        return self.type in TIME_DRIVEN_TYPES

    @property
    def params(self) -> dict[str, Any]:
        """The detector-specific keys of this rule."""
        return dict(self.model_extra or {})

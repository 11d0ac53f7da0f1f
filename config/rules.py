"""Rule instances: which detector type runs with which id; type-specific keys are checked by the detectors registry."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.base import Strict


class RuleSpec(Strict):
    # Extra keys are the detector's own parameters; `detectors.registry` validates them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: str = Field(min_length=1)
    kind: Literal["noise", "gas", "any"] = "any"
    enabled: bool = True
    for_s: float = Field(0, ge=0)
    clear_for_s: float = Field(0, ge=0)

    @property
    def params(self) -> dict:
        """The detector-specific keys of this rule."""
        return dict(self.model_extra or {})

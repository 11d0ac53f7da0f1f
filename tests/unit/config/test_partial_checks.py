"""`config.base.Strict`: cross-key checks still run, and blame the right key, when a sibling key fails."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError, model_validator

from config.base import KeyProblem, Strict
from config.pydantic_errors import problems_from_validation


class Pair(Strict):
    low: int = Field(0, ge=0)
    high: int = Field(10, ge=0)
    label: str = "x"

    @model_validator(mode="after")
    def _order(self) -> Pair:
        if self.high < self.low:
            raise KeyProblem("high", f"must not be below low {self.low} (got {self.high})")
        return self


class Holder(Strict):
    pairs: list[Pair] = []


def _lines(data) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Holder.model_validate(data)
    return [str(p) for p in problems_from_validation(info.value, Holder, (), {})]


def test_a_key_problem_blames_its_key():
    assert _lines({"pairs": [{"low": 5, "high": 1}]}) == ["config: pairs[0].high: must not be below low 5 (got 1)"]


def test_the_cross_check_runs_when_a_sibling_key_fails():
    assert _lines({"pairs": [{"low": 5, "high": 1, "label": 3}]}) == [
        "config: pairs[0].label: must be text (got 3)",
        "config: pairs[0].high: must not be below low 5 (got 1)",
    ]


def test_a_check_that_needs_a_failed_key_is_skipped():
    assert _lines({"pairs": [{"low": -1, "high": 1}]}) == ["config: pairs[0].low: must be at least 0 (got -1)"]


def test_a_failed_key_is_not_checked_as_its_default():
    # `low` fails; with its default 0 the check would pass anyway, and with `high` failing too nothing runs.
    assert _lines({"pairs": [{"low": "a", "high": -3}]}) == [
        "config: pairs[0].low: must be a whole number (got 'a')",
        "config: pairs[0].high: must be at least 0 (got -3)",
    ]


def test_valid_data_still_validates():
    assert Holder.model_validate({"pairs": [{"low": 1, "high": 2}]}).pairs[0].high == 2


class WithPostInit(Strict):
    a: int
    b: int = 0

    def model_post_init(self, __context) -> None:
        self.__dict__["_sum"] = self.a + self.b  # needs `a`, which may have failed

    @model_validator(mode="after")
    def _b_small(self) -> WithPostInit:
        if self.b > 5:
            raise KeyProblem("b", f"must be at most 5 (got {self.b})")
        return self


def test_a_post_init_that_needs_a_failed_key_does_not_crash_the_load():
    with pytest.raises(ValidationError) as info:
        WithPostInit.model_validate({"a": "x", "b": 9})
    assert [e["loc"] for e in info.value.errors()] == [("a",)]

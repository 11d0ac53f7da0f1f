"""Console unit-test fixtures: argon2 at its cheapest cost for tests whose subject is not the hash."""

from __future__ import annotations

import functools

import pytest
from argon2 import PasswordHasher

from console import users


@pytest.fixture
def cheap_password_hashes(monkeypatch):
    """UserStore hashes with argon2id at time_cost 1 and 64 KiB instead of the shipped 3 and 64 MiB.

    A shipped hash costs 0.2 s of CPU, and a console test makes five or more (the store's dummy hash, one per
    account, one per login): most of `make test-fast`'s console time. The same argon2id code runs, so hashes,
    verify, refusals and sessions behave as shipped; only the work factor differs.
    test_users_file_is_private_and_holds_no_password keeps the shipped cost.
    """
    monkeypatch.setattr(users, "PasswordHasher",
                        functools.partial(PasswordHasher, time_cost=1, memory_cost=64, parallelism=1))

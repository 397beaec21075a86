"""Password hashing: OWASP's Argon2id parameters, upgrades of old hashes, bounded concurrency."""

from __future__ import annotations

import asyncio
import os

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from fastpost.security import Passwords, available_cpus
from fastpost.settings import AuthSettings, Settings
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers import GatedPasswords, wait_until, with_auth

PASSWORD = "correct horse battery"


def fast_settings() -> Settings:
    return make_settings("sqlite+aiosqlite:///unused.db")


def test_default_parameters_are_owasps_argon2id_with_19_mib_2_passes_1_lane() -> None:
    passwords = Passwords(Settings(env="test", auth=AuthSettings(secret_key=TEST_SECRET)))
    parameters = extract_parameters(passwords.hash_sync(PASSWORD))
    assert parameters.type is Type.ID
    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19456, 2, 1)


def test_the_decoy_hash_for_unknown_users_has_the_current_parameters() -> None:
    # Otherwise a login for an unknown user would take a different time than a wrong password.
    passwords = Passwords(fast_settings())
    assert extract_parameters(passwords._decoy_hash) == extract_parameters(
        passwords.hash_sync(PASSWORD)
    )


@pytest.mark.parametrize(
    "old_hasher",
    [
        PasswordHasher(time_cost=3, memory_cost=64, parallelism=4),  # other parameters
        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I),  # variant
    ],
    ids=["other-parameters", "argon2i"],
)
async def test_a_hash_with_other_parameters_verifies_and_is_rehashed_with_the_current_ones(
    old_hasher: PasswordHasher,
) -> None:
    passwords = Passwords(fast_settings())
    old_hash = old_hasher.hash(PASSWORD)
    verification = await passwords.verify(old_hash, PASSWORD)
    assert verification.ok
    assert verification.new_hash is not None
    assert extract_parameters(verification.new_hash) == extract_parameters(
        passwords.hash_sync(PASSWORD)
    )
    assert (await passwords.verify(verification.new_hash, PASSWORD)).new_hash is None


async def test_a_wrong_password_is_never_rehashed() -> None:
    passwords = Passwords(fast_settings())
    old_hash = PasswordHasher(time_cost=3, memory_cost=64, parallelism=4).hash(PASSWORD)
    verification = await passwords.verify(old_hash, "wrong password")
    assert (verification.ok, verification.new_hash) == (False, None)


@pytest.mark.parametrize("stored", [None, "not an argon2 hash"])
async def test_no_user_or_an_unreadable_hash_fails_without_error(stored: str | None) -> None:
    verification = await Passwords(fast_settings()).verify(stored, PASSWORD)
    assert (verification.ok, verification.new_hash) == (False, None)


def test_by_default_as_many_hashes_run_at_once_as_the_process_has_cpus() -> None:
    assert Passwords(fast_settings()).concurrency == available_cpus()
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))


async def test_twenty_checks_at_once_never_run_more_than_the_concurrency_in_parallel() -> None:
    passwords = GatedPasswords(with_auth(fast_settings(), password_hash_concurrency=2))
    checks = [asyncio.create_task(passwords.verify(None, PASSWORD)) for _ in range(20)]
    await wait_until(lambda: passwords.running == 2)
    # The other 18 wait in line; none starts while both slots are taken.
    await asyncio.sleep(0.2)
    assert passwords.running == 2
    passwords.gate.set()
    results = await asyncio.gather(*checks)
    assert len(results) == 20
    assert passwords.most_at_once == 2

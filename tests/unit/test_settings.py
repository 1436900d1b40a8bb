from __future__ import annotations

import pytest

from broker import Settings
from broker.validation import MAX_BATCH_MESSAGES, MAX_CLAIM_LIMIT


def test_defaults_are_the_designs() -> None:
    s = Settings()
    assert (s.presence_ttl_seconds, s.lease_seconds, s.max_leases, s.message_ttl_seconds) == (45, 120, 3, 86_400)
    assert (s.device_segments_per_minute, s.device_segments_per_day, s.quota_api_only) == (30, 1000, 100)
    assert (s.tasks_per_minute, s.tasks_burst, s.sends_per_second, s.sends_burst, s.auth_per_minute) == (
        6,
        10,
        20,
        200,
        20,
    )


def test_waiting_for_no_replica_and_one_pool_shard_are_the_defaults() -> None:
    assert (Settings().redis_wait_replicas, Settings().pool_shards) == (0, 1)
    s = Settings.from_env({"CONNECFY_REDIS_WAIT_REPLICAS": "0", "CONNECFY_POOL_SHARDS": "64"})
    assert (s.redis_wait_replicas, s.pool_shards) == (0, 64)


def test_environment_overrides() -> None:
    s = Settings.from_env(
        {"CONNECFY_LEASE_SECONDS": "30", "REDIS_URL": "redis://x:1/0", "CONNECFY_SIGNUP_OPEN": "false", "PATH": "/bin"}
    )
    assert (s.lease_seconds, s.redis_url, s.signup_open) == (30, "redis://x:1/0", False)


@pytest.mark.parametrize(
    "env",
    [
        {"CONNECFY_LEASE_SECONDS": "soon"},
        {"CONNECFY_NO_SUCH_THING": "1"},
        {"CONNECFY_SENDS_PER_SECOND": "0"},
        {"CONNECFY_TASKS_BURST": "-3"},
        {"CONNECFY_CLAIM_DEFAULT_LIMIT": "200"},
        {"CONNECFY_REDIS_WAIT_REPLICAS": "-1"},
        {"CONNECFY_POOL_SHARDS": "0"},
        {"CONNECFY_POOL_SHARDS": "65"},
        {"CONNECFY_DEFAULT_COUNTRY": "Germany"},
    ],
)
def test_bad_environment_is_an_error(env) -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "values", [{"claim_max_limit": MAX_CLAIM_LIMIT + 1}, {"batch_max_messages": MAX_BATCH_MESSAGES + 1}]
)
def test_a_setting_may_lower_an_api_maximum_but_not_raise_it(values) -> None:
    with pytest.raises(ValueError, match="the API's own maximum"):
        Settings(**values)
    lowered = {name: value - 2 for name, value in values.items()}
    assert all(getattr(Settings(**lowered), name) == value for name, value in lowered.items())

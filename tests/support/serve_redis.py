"""Which Redis an end-to-end module's ``connecfy serve`` runs on: its own private Redis,
and again on the session's Redis Cluster, given only ``REDIS_URL`` of one of its nodes
(flushed first), as an operator scaling out would start it, with the platform pool split
in three shards (one per primary) so the pool's API runs through the split claim.

A module takes the :func:`serve_redis` fixture and adds what it gives to its server's
settings; every test of the module then runs once per Redis.
"""

from __future__ import annotations

import pytest

from tests.support.cluster import RedisClusterProcess

PRIVATE = "private-redis"
CLUSTER = "redis-cluster"


@pytest.fixture(scope="module", params=[PRIVATE, CLUSTER])
def serve_redis(request: pytest.FixtureRequest) -> dict[str, str]:
    """``{}`` (serve starts its private Redis) or ``{"REDIS_URL": <a cluster node>, ...}``."""
    if request.param == PRIVATE:
        return {}
    cluster: RedisClusterProcess = request.getfixturevalue("redis_cluster")
    cluster.flush()
    # Any node will do: not always the first, so discovery from a replica counts too.
    node = cluster.live_nodes()[-1]
    return {"REDIS_URL": f"redis://127.0.0.1:{node.port}", "CONNECFY_POOL_SHARDS": "3"}

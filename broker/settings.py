"""Every tunable of Connecfy in one typed object, read from ``CONNECFY_*`` variables.

The defaults here are the ones the design promises; docs/operations.md lists them. A field
``lease_seconds`` is read from ``CONNECFY_LEASE_SECONDS``; ``redis_url`` also from the
conventional ``REDIS_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from broker.validation import COUNTRY_CODES, MAX_BATCH_MESSAGES, MAX_CLAIM_LIMIT

ENV_PREFIX = "CONNECFY_"
MAX_POOL_SHARDS = 64
# Counts where 0 is a real choice (no replicas to wait for).
ZERO_ALLOWED = frozenset({"redis_wait_replicas"})


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    # Redis connections per worker process; a request finding all busy waits for one.
    redis_max_connections: int = 64
    # Each Redis command (or pipeline) gets this long all told: the wait for a free
    # connection, connecting, and the reply; then the request is a 503. Never retried.
    redis_timeout_ms: int = 2_000
    # Every write a client is answered about (a send's 202, a claim's tasks, a status
    # report, a registration, a received SMS) first waits until this many replicas hold
    # it (WAIT), so a primary failover loses none of them. 0: answer at once
    # (asynchronous replication).
    redis_wait_replicas: int = 0
    # The platform pool split into this many hash-tagged shards (spread over a Redis
    # Cluster's slots). Each pool sender and pool phone has a home shard, chosen when it
    # is created and kept; changing the number later moves nothing (docs/operations.md).
    pool_shards: int = 1
    data_dir: str = "./connecfy-data"
    # The sweeper, snapshotter and webhook dispatcher run inside each API worker (each
    # takes a Redis lock, so one of each works at a time). connecfy serve turns this off
    # for its workers and runs them in a connecfy background process instead.
    background_in_workers: bool = True
    # A plain poll, heartbeat or external send answered from the ASGI scope
    # (api/hot_path.py), with the same answer as Litestar's handler at less CPU; false
    # serves them through the handler like every other request.
    hot_paths: bool = True

    # HTTP (connecfy serve). The listen queue, which the kernel caps at
    # net.core.somaxconn; the connections each worker holds at once (a phone on its own
    # keep-alive connection holds one all the time; past this, new connections wait in
    # the listen queue, senders and the dashboard too), each an open file (serve raises
    # its soft limit to the hard one); and how long an idle keep-alive connection, or one
    # that has not sent its request head, stays open.
    http_backlog: int = 4096
    http_connections_per_worker: int = 12_000
    http_idle_timeout_seconds: int = 30
    # Cleartext HTTP/2 (prior knowledge, "h2c") beside HTTP/1.1 on serve's port. Off, serve
    # speaks HTTP/1.1 only, and a worker holds an idle keep-alive connection in about half
    # the memory (bench/wait_memory.py); clients get HTTP/2 from a TLS proxy in front
    # (deploy/nginx), which speaks HTTP/1.1 to serve.
    http2_cleartext: bool = False

    # Long polls (GET .../tasks/?wait=N): the most a worker process holds at once; one
    # more is answered at once, as a plain poll. Each costs a socket and a few KiB.
    long_poll_max_waits: int = 10_000

    # Presence and leases.
    presence_ttl_seconds: int = 45
    lease_seconds: int = 120
    max_leases: int = 3
    # A phone whose last pool_skip_after_failures reports were failed (not retryable) is
    # skipped by pool claims for pool_skip_seconds (a sent or delivered report ends it).
    pool_skip_after_failures: int = 5
    pool_skip_seconds: int = 600

    # Messages.
    message_ttl_seconds: int = 86_400
    idempotency_ttl_seconds: int = 86_400
    claim_default_limit: int = 10
    claim_max_limit: int = MAX_CLAIM_LIMIT
    batch_max_messages: int = MAX_BATCH_MESSAGES

    # Per-device send budget in SMS segments (Android's own default is 30 per minute).
    device_segments_per_minute: int = 30
    device_segments_per_day: int = 1_000

    # Daily message quota per account.
    quota_api_only: int = 100
    quota_self_managed: int = 10_000

    # Campaigns: national numbers in a campaign's file are read as numbers of this
    # country (ISO 3166 code such as US or DE; empty: every number must be international,
    # +<country code>...), unless the account set its own or the upload names one; a draft never started is
    # deleted after campaign_draft_ttl_seconds, a done or cancelled campaign after
    # campaign_retention_days (its messages stay in the history).
    default_country: str = ""
    campaign_draft_ttl_seconds: int = 7 * 86_400
    campaign_retention_days: int = 30

    pairing_code_ttl_seconds: int = 600
    session_ttl_seconds: int = 14 * 86_400
    sweep_batch: int = 500
    signup_open: bool = True
    # How often an open dashboard page asks for the Inbox's count of new SMS (a shown
    # page only; two reads of Redis each time).
    inbox_poll_ms: int = 20_000

    # Rate limits (GCRA): polls per device, sends per account, auth per client address.
    tasks_per_minute: int = 6
    tasks_burst: int = 10
    sends_per_second: int = 20
    sends_burst: int = 200
    auth_per_minute: int = 20
    auth_burst: int = 20
    # Client addresses for the auth limits: the socket peer, or, behind a reverse proxy
    # that appends to it, the last address of X-Forwarded-For.
    trust_forwarded_for: bool = False

    # GET /metrics: open when empty, else it needs "Authorization: Bearer <token>".
    metrics_token: str = ""

    # History: the store (empty: a SQLite file in data_dir; else a SQLAlchemy URL such as
    # postgresql://user:pass@host/db), how often the snapshotter runs, how long finished
    # messages stay in Redis after their last change, and how long the store keeps them.
    database_url: str = ""
    snapshot_interval_ms: int = 2_000
    hot_retention_seconds: int = 3_600
    history_retention_days: int = 90

    # Webhooks: each POST gets webhook_timeout_seconds; a failed event is retried with
    # exponential backoff (first wait webhook_backoff_first_ms, doubling up to
    # webhook_backoff_max_ms, each with jitter) until webhook_retry_seconds after it was
    # queued; an endpoint failing that long is disabled. Each endpoint has webhook_lanes
    # lanes delivering at once (a message's events share one, so they arrive in order),
    # at most webhook_max_in_flight POSTs run at once in all, and at most
    # webhook_backlog_max events wait per endpoint. Plain-HTTP loopback URLs are refused
    # unless webhook_allow_loopback_http (for development and tests).
    webhook_timeout_seconds: int = 5
    webhook_retry_seconds: int = 86_400
    webhook_backoff_first_ms: int = 1_000
    webhook_backoff_max_ms: int = 3_600_000
    webhook_lanes: int = 8
    webhook_max_in_flight: int = 64
    webhook_backlog_max: int = 1_000_000
    webhook_poll_ms: int = 200
    webhook_allow_loopback_http: bool = False

    def __post_init__(self) -> None:
        """Every number is a count, a length of time or a limit: 0 or less makes no sense
        (a rate of 0 would divide by zero on every send), so it is refused at start-up."""
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in ZERO_ALLOWED:
                if value < 0:
                    raise ValueError(f"setting {name} must be 0 or more, not {value}")
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"setting {name} must be 1 or more, not {value}")
        if self.claim_default_limit > self.claim_max_limit:
            raise ValueError("setting claim_default_limit must not exceed claim_max_limit")
        if self.claim_max_limit > MAX_CLAIM_LIMIT:
            raise ValueError(f"setting claim_max_limit must not exceed {MAX_CLAIM_LIMIT}, the API's own maximum")
        if self.pool_shards > MAX_POOL_SHARDS:
            raise ValueError(f"setting pool_shards must not exceed {MAX_POOL_SHARDS}")
        if self.default_country and self.default_country.upper() not in COUNTRY_CODES:
            raise ValueError(f"setting default_country must be a country code such as US, not {self.default_country!r}")
        if self.batch_max_messages > MAX_BATCH_MESSAGES:
            raise ValueError(f"setting batch_max_messages must not exceed {MAX_BATCH_MESSAGES}, the API's own maximum")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; unknown ``CONNECFY_*`` names are an error."""
        environ = os.environ if environ is None else environ
        fields = set(cls.__struct_fields__)
        values: dict[str, str] = {}
        if environ.get("REDIS_URL"):
            values["redis_url"] = environ["REDIS_URL"]
        for name, value in environ.items():
            if not name.startswith(ENV_PREFIX):
                continue
            field = name[len(ENV_PREFIX) :].lower()
            if field not in fields:
                raise ValueError(f"unknown setting {name}")
            values[field] = value
        return msgspec.convert(values, cls, strict=False)

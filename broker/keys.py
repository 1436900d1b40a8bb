"""The Redis key map: every key Connecfy writes, and the only module that spells one.

Every key starts with a hash tag naming its shard, so each script call touches one
slot and runs unchanged on Redis Cluster.

Shards (``{S}`` below):

- ``{a:<account>}``: an account and everything routed inside it: its devices, their
  queue, the account's own pool (shared by its online devices), its messages and
  counters.
- ``{p:<pool>}``: a platform pool (this version has one, ``default``): the pool
  phones, the pool queue, the messages routed through it and the per-sender counters
  of those messages. Split into ``CONNECFY_POOL_SHARDS`` shards, the pool's shards are
  ``{p:default}``, ``{p:default:1}``, ``{p:default:2}``, ...; each pool sender and each
  pool phone has one of them as its home (see :mod:`broker.pool_shards`).

Per shard:

==================================  ===========  ============================================
key                                 type         what
==================================  ===========  ============================================
``{S}:messages``                    hash         message id -> JSON record
``{S}:counters``                    hash         ``a:<account>:<status>``, ``a:<account>:total``,
                                                 ``d:<device>:<status>``: messages per state
``{S}:quota``                       hash         ``<account>:day``, ``<account>:used``: daily quota
``{S}:idempotency:<account>:<h>``   string       fingerprint|ids, 24 h (h = SHA-256 of the key)
``{S}:expiry``                      zset         queued id -> TTL deadline (ms)
``{S}:events``                      stream       one entry per status change (id, account,
                                                 status, device, at, error), and one per
                                                 presence change of a device (event, account,
                                                 device, at); consumer group
                                                 ``snapshotter``, entries deleted once stored
``{S}:trim``                        zset         ``<account>:<id>:<version>`` -> last change (ms):
                                                 finished messages stored in the history
                                                 store, removed from Redis after the hot
                                                 retention window if still at that version
``{S}:pool``                        zset         queued pool id -> virtual finish time
``{S}:pool:state``                  hash         ``v``, ``f:<account>``, ``n:<account>``: fairness
``{S}:pool:high``                   zset (lex)   ``<account>:<id>``: the pool's queued high-priority
                                                 ids, every score 0 (see includes/pool.lua)
``{S}:queue``                       zset (lex)   ``<device>:<id>``, ``<device>:!<id>`` for high
                                                 priority: device-targeted queued ids
``{S}:leased``                      zset (lex)   ``<device>:<lease_until>:<id>``: claimed ids
``{S}:lease-checks``                zset         claimed id -> when the sweep looks next (ms)
``{S}:devices``                     set          device ids of the shard
``{S}:device:<device>``             hash         name, phone_number, account, token_sha256,
                                                 per_minute, per_day, day, day_used, window_used,
                                                 battery, android_version, app_version,
                                                 last_seen, created, pool_turn (a pool
                                                 phone's claims of a split pool), send_window
                                                 and send_open (broker/send_windows.py)
``{S}:device:<device>:window``      zset         ``<now>:<last id>:<segments>`` -> claim time: one charging
                                                 entry per claim, the last 60 s
``{S}:device:<device>:presence``    string       last heartbeat, expires after the presence TTL
``{S}:last-seen``                   zset         device id -> last heartbeat (ms)
``{S}:offline``                     set          devices whose presence lapsed after they were
                                                 seen: each had its ``device.offline`` event,
                                                 and its return is a ``device.online`` one
                                                 (``presence-changes-5.lua``); a removed
                                                 device leaves it
``{S}:presence-watch``              hash         ``through``: lapses of presence up to this
                                                 last-seen time (ms) have been looked at;
                                                 ``now``: the last look's time, which later
                                                 looks never go back from
``{S}:pool-recipients``             hash         platform pool: ``<device>:<to>`` -> ``<account>|<ms>``,
                                                 who a pool phone last sent to that number for
``{S}:pool-recipients:age``         zset         ``<device>:<to>`` -> when (ms): older than 30
                                                 days is dropped
``{S}:inbound-ref:<device>:<h>``    string       a received SMS's ``ref`` (h = its SHA-256) ->
                                                 ``<shard>|<id>|<account>``, 30 days: in the
                                                 phone's own shard, so a retry finds its id
``{S}:pool-failures``               hash         device -> ``<failed reports in a row>|<pool claims
                                                 skip it until (ms)>|<why>`` (includes/failures.lua)
``{S}:pool-visitors``               zset         pool phone of another home shard -> its
                                                 last claim here (ms): online for the sweep
``{S}:scheduled``                   zset         scheduled message id -> its send_at (ms)
``{S}:waiting``                     zset         long-polling device id -> the end of its wait
                                                 (ms): who a wake-up may go to
``{S}:wake``                        channel      (pub/sub, sharded on a Cluster) the waiting
                                                 device ids a script woke, space-separated
``{S}:sent:<account>``              zset (lex)   a sender's message ids, every score 0 (ids sort by time)
``{S}:threads:<account>``           zset (lex)   the inbox's threads: ``<newest id>|<counterpart>``,
                                                 every score 0, one per number (or sender name)
                                                 that wrote to the account, at the newest
                                                 message either way (see includes/threads.lua)
``{S}:threads:<account>:newest``    hash         counterpart -> that newest id: the member to
                                                 replace when a later message comes
``{S}:api-keys``                    hash         API key id -> JSON (id, name, created_ms)
``{S}:api-keys:last-used``          hash         API key id -> last use (ms)
``{S}:pairing-code:<code>``         string       owner account id ("" for the pool), expiring
``{S}:replicated``                  string       written before each ``WAIT`` for replicas
                                                 (``CONNECFY_REDIS_WAIT_REPLICAS``), expiring
                                                 after a minute (:func:`replication_mark`)
``{S}:rate:sends:<account>``        string       GCRA theoretical arrival time (ms) of a
                                                 sender's send limiter, expiring when full
``{S}:rate:tasks:<device>``         string       the same for a device's poll limiter
``{S}:limit-requests``              zset         an account's limit request ids -> created (ms)
``{S}:suppressed:<account>``        zset (lex)   a sender's suppressed numbers (E.164), every
                                                 score 0: the list's pages, in number order
``{S}:suppression:<account>``       hash         suppressed number -> JSON (reason, created_ms):
                                                 what the enqueue script checks
``{S}:webhooks``                    set          the account's webhook endpoint ids
``{S}:webhook:<ep>``                hash         url, events, secret, previous_secret,
                                                 previous_until_ms, lanes, created_ms,
                                                 queued, dropped, failing_since_ms,
                                                 last_success_ms, disabled_ms, disabled_reason
``{S}:webhook:<ep>:lane:<k>``       list         events waiting for the endpoint, oldest first;
                                                 a message's events all go to one lane
``{S}:webhook:<ep>:retry``          hash         lane -> ``<attempts>|<next attempt ms>`` of its
                                                 first event, while that one is failing
``{S}:webhook:<ep>:log``            list         the latest delivery attempts, newest first
``{S}:campaign:<account>:<c>``      hash         a campaign (:mod:`broker.campaigns`): name,
                                                 template, columns, phone_column, device, send_at,
                                                 valid_for, priority, state, report (JSON), valid,
                                                 chunk, next_row, plan, skipped, resume_at, reason,
                                                 cancel_cursor, created, started, finished
``{S}:campaign:<account>:<c>:rows`` list         its valid rows, in file order: JSON ``[row,
                                                 to, [values of the template's columns]]``;
                                                 deleted once every row is queued or the
                                                 campaign is cancelled
``{S}:campaign:<account>:<c>:sent`` list         the ids of the messages queued for it, in order
``{S}:campaigns:<account>``         zset (lex)   a sender's campaign ids, every score 0 (ids sort by time)
``{S}:campaigns:active``            set          ``<account>|<c>``: campaigns the background job
                                                 works on (sending, paused, cancelling)
``{S}:campaigns:expiry``            zset         ``<account>|<c>`` -> when the campaign is deleted
                                                 (ms): a draft's end, or a finished one's retention
==================================  ===========  ============================================

A campaign's messages are counted in the shard's counters hash as ``c:<c>:<status>`` and
``c:<c>:total``, by the same scripts that count them per account.

The inbox's threads live as long as their newest message does: trimming a message from
Redis leaves its thread (the history store has the message), and a thread whose newest
message is in neither (past ``CONNECFY_HISTORY_RETENTION_DAYS``) is dropped by the inbox
when it meets it (``thread-forget-2.lua``). ``connecfy restore`` writes them back from
the store.

Account shard only: ``{a:<account>}:account`` (hash: email, account_type, daily_quota,
operator, password_hash, created_ms, the raised limits sends_per_second, sends_burst,
tasks_per_minute, tasks_burst, pending_request, the id of a waiting limit request, and
default_country, the country its campaign files' national numbers are read in).
The claim script reads the tasks limits from it; in a platform pool it is absent and
pool phones use the server's defaults. Also ``{a:<account>}:inbox-seen`` (hash: ``at``,
when the account last opened the dashboard's inbox, ms; ``received``, its
``a:<account>:received`` counter then), for API-only accounts too, whose counters are in
their pool shard: the SMS received since are the inbox's new ones (:mod:`broker.inbox`).

Lookups across shards are plain single-key reads done before a script, each key its own
hash tag:

- ``{email:<sha256 of the lowercased email>}`` -> account id
- ``{device-token:<sha256 of token>}`` -> ``<shard tag>|<device id>``
- ``{pairing-code:<code>}`` -> shard tag the code pairs into
- ``{api-key:<sha256 of key>}`` -> ``<account id>|<key id>``
- ``{session:<sha256 of session id>}`` (hash: account, csrf_token, expires_at_ms), expiring
- ``{shards}``: set of every shard tag: the background work (sweep, snapshots, webhook
  delivery) goes shard by shard over it
- ``{operator}``: the first operator account's id: a platform pool phone's received SMS
  that no account sent to that number go to it
- ``{pool-shards}``: set of every platform pool shard tag that is, or was, a home: the
  shards a pool phone's claim visits
- ``{scheduled}`` (sorted set): shard tag -> the earliest send_at (ms) of a message
  scheduled there, or earlier: the shards the release of due messages visits
  (:mod:`broker.schedule`)
- ``{background}`` (sorted set): ``<holder>|<host>|<store>|<label>`` -> heartbeat deadline
  (ms): the live background processes, which share the shards out between them
  (:mod:`broker.leases`); ``store`` is ``local`` for a SQLite history store
- ``{history-epoch}``: the id of this Redis's history, also kept in the history store; a
  Redis without it beside a store that has one lost its data (``connecfy restore``)
- ``{rate:<name>:<client address>}``: GCRA limiter of signup, login and register
- ``{limit-requests}`` (hash): request id -> JSON of a request for higher limits
- ``{webhook-endpoints}``: set of ``<account>|<endpoint id>``, every webhook endpoint,
  so the process taking an account shard finds the events still waiting
- ``{webhook-wake}``: set of ``<account>|<endpoint id>`` whose lanes were given events by
  a process not holding the account's shard (a manual redelivery, or the fan-out of
  another shard's stream), for the holder's dispatcher to pick up

Shard streams have a second consumer group, ``webhooks``, once the dispatcher has run;
an entry is deleted only when every group has acknowledged it.

Background leases, one per shard, in the shard's own slot (:func:`shard_lease`) so that a
script of the shard checks the fencing token in the same atomic call as its write:

- ``{S}:background``: ``<holder>|<fencing token>``, expiring: the background process
  that sweeps the shard, copies its stream to the history store, trims it, fans its
  stream out to webhook lanes and, in an account shard, delivers the account's lanes
- ``{S}:background:fence``: the shard's fencing counter, one more for each new holder
  (:func:`fence`)
"""

from __future__ import annotations

import hashlib

DEFAULT_POOL = "default"


def account_shard(account_id: str) -> str:
    """The shard tag of an account."""
    return f"a:{account_id}"


def pool_shard(pool: str = DEFAULT_POOL, index: int = 0) -> str:
    """The shard tag of a platform pool, or of its shard ``index`` when it is split
    (shard 0 keeps the unsplit pool's tag, so splitting moves nothing)."""
    return f"p:{pool}" if index == 0 else f"p:{pool}:{index}"


def is_pool_shard(tag: str) -> bool:
    return tag.startswith("p:")


def queue_member(device_id: str, message_id: str, priority: str) -> str:
    """A message's member of its shard's device queue (as includes/leases.lua spells it)."""
    return f"{device_id}:!{message_id}" if priority == "high" else f"{device_id}:{message_id}"


def pool_high_member(account_id: str, message_id: str) -> str:
    """A high-priority message's member of its pool's high set (includes/pool.lua)."""
    return f"{account_id}:{message_id}"


class ShardKeys:
    """The keys of one shard, built once and reused for every call into it."""

    __slots__ = (
        "counters",
        "credentials",
        "devices",
        "events",
        "expiry",
        "last_seen",
        "lease_checks",
        "leased",
        "messages",
        "offline",
        "pool",
        "pool_failures",
        "pool_high",
        "pool_recipients",
        "pool_recipients_age",
        "pool_state",
        "pool_visitors",
        "prefix",
        "presence_watch",
        "queue",
        "quota",
        "scheduled",
        "tag",
        "trim",
        "waiting",
        "wake_channel",
    )

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.prefix = p = "{" + tag + "}"
        self.messages = f"{p}:messages"
        self.counters = f"{p}:counters"
        self.quota = f"{p}:quota"
        self.expiry = f"{p}:expiry"
        self.events = f"{p}:events"
        self.pool = f"{p}:pool"
        self.pool_state = f"{p}:pool:state"
        self.pool_high = f"{p}:pool:high"
        self.pool_failures = f"{p}:pool-failures"
        self.pool_visitors = f"{p}:pool-visitors"
        self.waiting = f"{p}:waiting"
        self.scheduled = f"{p}:scheduled"
        self.wake_channel = f"{p}:wake"
        self.pool_recipients = f"{p}:pool-recipients"
        self.pool_recipients_age = f"{p}:pool-recipients:age"
        self.queue = f"{p}:queue"
        self.leased = f"{p}:leased"
        self.lease_checks = f"{p}:lease-checks"
        self.devices = f"{p}:devices"
        self.last_seen = f"{p}:last-seen"
        self.offline = f"{p}:offline"
        self.presence_watch = f"{p}:presence-watch"
        self.trim = f"{p}:trim"
        # account id -> a number moved whenever one of the account's API keys is revoked
        # or its limits change: a process that admitted a key under the number it read
        # enqueues only while it holds (see ApiKeys.admit).
        self.credentials = f"{p}:credentials"

    def device(self, device_id: str) -> str:
        return f"{self.prefix}:device:{device_id}"

    def device_window(self, device_id: str) -> str:
        return f"{self.prefix}:device:{device_id}:window"

    def device_presence(self, device_id: str) -> str:
        return f"{self.prefix}:device:{device_id}:presence"

    def sent(self, account_id: str) -> str:
        return f"{self.prefix}:sent:{account_id}"

    def idempotency(self, account_id: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"{self.prefix}:idempotency:{account_id}:{digest}"

    def pairing_code(self, code: str) -> str:
        return f"{self.prefix}:pairing-code:{code}"

    def send_rate(self, account_id: str) -> str:
        return f"{self.prefix}:rate:sends:{account_id}"

    def poll_rate(self, device_id: str) -> str:
        return f"{self.prefix}:rate:tasks:{device_id}"

    def account(self) -> str:
        return f"{self.prefix}:account"

    def inbox_seen(self) -> str:
        return f"{self.prefix}:inbox-seen"

    def inbound_ref(self, device_id: str, ref: str) -> str:
        digest = hashlib.sha256(ref.encode()).hexdigest()
        return f"{self.prefix}:inbound-ref:{device_id}:{digest}"

    def threads(self, account_id: str) -> str:
        return f"{self.prefix}:threads:{account_id}"

    def thread_newest(self, account_id: str) -> str:
        return f"{self.prefix}:threads:{account_id}:newest"

    def suppressed(self, account_id: str) -> str:
        return f"{self.prefix}:suppressed:{account_id}"

    def suppression(self, account_id: str) -> str:
        return f"{self.prefix}:suppression:{account_id}"

    def campaign(self, account_id: str, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{account_id}:{campaign_id}"

    def campaign_rows(self, account_id: str, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{account_id}:{campaign_id}:rows"

    def campaign_sent(self, account_id: str, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{account_id}:{campaign_id}:sent"

    def campaigns(self, account_id: str) -> str:
        return f"{self.prefix}:campaigns:{account_id}"

    def campaigns_active(self) -> str:
        return f"{self.prefix}:campaigns:active"

    def campaigns_expiry(self) -> str:
        return f"{self.prefix}:campaigns:expiry"

    def limit_requests(self) -> str:
        return f"{self.prefix}:limit-requests"

    def api_keys(self) -> str:
        return f"{self.prefix}:api-keys"

    def api_keys_last_used(self) -> str:
        return f"{self.prefix}:api-keys:last-used"

    def webhooks(self) -> str:
        return f"{self.prefix}:webhooks"

    def webhook(self, endpoint_id: str) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}"

    def webhook_lane(self, endpoint_id: str, lane: int) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}:lane:{lane}"

    def webhook_retry(self, endpoint_id: str) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}:retry"

    def webhook_log(self, endpoint_id: str) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}:log"


def email_index(email: str) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return "{email:" + digest + "}"


def device_token_index(token_sha256: str) -> str:
    return "{device-token:" + token_sha256 + "}"


def pairing_code_index(code: str) -> str:
    return "{pairing-code:" + code + "}"


def api_key_index(key_sha256: str) -> str:
    return "{api-key:" + key_sha256 + "}"


def session(session_sha256: str) -> str:
    return "{session:" + session_sha256 + "}"


SHARDS = "{shards}"
OPERATOR = "{operator}"
POOL_SHARDS = "{pool-shards}"
SCHEDULED = "{scheduled}"
BACKGROUND = "{background}"
HISTORY_EPOCH = "{history-epoch}"
LIMIT_REQUESTS = "{limit-requests}"
WEBHOOK_ENDPOINTS = "{webhook-endpoints}"
WEBHOOK_WAKE = "{webhook-wake}"


def shard_lease(tag: str) -> str:
    """The background lease of shard ``tag``, in the shard's own slot."""
    return "{" + tag + "}:background"


def fence(lock: str) -> str:
    """The fencing counter of ``lock`` (same hash tag, so one script takes both)."""
    return lock + ":fence"


def replication_mark(key: str) -> str:
    """The key written right before a ``WAIT`` that follows a write to ``key``: with
    ``key``'s hash tag (every script's keys have one), so that it goes to the same
    primary and the ``WAIT`` covers all that primary holds of the slot."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end <= start + 1:
        raise ValueError(f"{key!r} has no hash tag")
    return key[start : end + 1] + ":replicated"


def client_rate(name: str, client: str) -> str:
    """A rate limiter for a client address (register, login), its own slot."""
    return "{rate:" + name + ":" + client + "}"

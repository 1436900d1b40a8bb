--[[
  One shard's part of a pool phone's claim when the platform pool is sharded
  (CONNECFY_POOL_SHARDS > 1): the phone's own leases in this shard that ran out
  (redelivered to it), then this shard's pool in fair order, within the budget the
  claim in its home shard left. The home shard is charged afterwards (pool-charge).
  The phone is recorded as a visitor of this shard, so the sweep here knows it is
  still online while it holds this shard's messages. In a long poll the phone is
  listed as waiting here when this shard hands it nothing (includes/wakeups).

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  leased set                     {S}:leased
    KEYS[4]  lease checks sorted set        {S}:lease-checks
    KEYS[5]  expiry sorted set              {S}:expiry
    KEYS[6]  pool sorted set                {S}:pool
    KEYS[7]  pool state hash                {S}:pool:state
    KEYS[8]  pool visitors sorted set       {S}:pool-visitors
    KEYS[9]  events stream                  {S}:events
    KEYS[10] waiting set                    {S}:waiting
    KEYS[11] pool's high-priority set       {S}:pool:high
    KEYS[12] failing phones hash            {S}:pool-failures

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  most messages to return (0..100; 0 only records the visit)
    ARGV[4]  lease (ms)
    ARGV[5]  most leases per message
    ARGV[6]  presence TTL (ms): visitors older than this are dropped
    ARGV[7]  1 when the device is online (then the pool is claimed), else 0
    ARGV[8]  segments used in the last 60 s   ARGV[9]  per-minute budget
    ARGV[10] segments used today              ARGV[11] per-day budget
    ARGV[12] "-" outside a long poll, else as the claim script's ARGV[12]

  Output:
    {charged, budget_full, senders, {id, to, body, segments, sim slot, encrypted}, ...}: the segments to
    charge to the home shard, 1 when the claim stopped at a message that does not fit
    the budget, how many senders still have messages in this shard's pool (what the
    caller splits its next claims by), then the messages handed out, oldest first.
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/claiming"
--- @include "includes/wakeups"
--- @include "includes/failures"

local visitorsKey = KEYS[8]
local device = ARGV[1]
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local presenceTtl = tonumber(ARGV[6])

local c = newClaim(device, now, limit, tonumber(ARGV[4]), tonumber(ARGV[5]), {
  messages = KEYS[1], events = KEYS[9], expiry = KEYS[5], leased = KEYS[3], leaseChecks = KEYS[4]
})
c.minuteUsed = tonumber(ARGV[8])
c.perMinute = tonumber(ARGV[9])
c.dayUsed = tonumber(ARGV[10])
c.perDay = tonumber(ARGV[11])

rcall("ZADD", visitorsKey, now, device)
rcall("ZREMRANGEBYSCORE", visitorsKey, "-inf", now - presenceTtl)

redeliver(c)
local budgetFull = false
if ARGV[7] == "1" and not poolSkips(KEYS[12], device, now) then
  budgetFull = claimFromPool(c, {key = KEYS[6], state = KEYS[7], high = KEYS[11]})
end

bulkRun(c.bulk)
flush(c.batch, c.messagesKey, KEYS[2])
-- The pool state holds "v" and, per sender with queued messages, "f:" and "n:".
local senders = math.floor((rcall("HLEN", KEYS[7]) - rcall("HEXISTS", KEYS[7], "v")) / 2)
local claimed = c.claimed
noteWaiting(KEYS[10], device, ARGV[12], #claimed, now)
table.insert(claimed, 1, senders)
table.insert(claimed, 1, budgetFull and 1 or 0)
table.insert(claimed, 1, c.charged)
return claimed

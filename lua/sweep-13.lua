--[[
  Keep every message moving, a bounded batch per call:
  - a queued message past its TTL becomes expired;
  - a claimed message whose lease ran out, when it has had the most leases allowed or
    its TTL has passed, fails with "device_lost" (device-targeted ones too);
  - a claimed pool message whose lease ran out while its device is offline (no
    heartbeat in its home shard, no claim visiting this one) goes back to the front
    of the pool for another phone;
  - any other claimed message whose lease ran out stays with its device, which gets
    it again on its next claim; the sweep looks at it again later (a pool message
    after one presence TTL, a device-targeted one at its TTL).
  Wake-ups (includes/wakeups): one waiting phone per message back in the pool, and a
  waiting device whose own lease ran out (it is handed the message again).

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  device queue                   {S}:queue
    KEYS[4]  leased set                     {S}:leased
    KEYS[5]  lease checks sorted set        {S}:lease-checks
    KEYS[6]  expiry sorted set              {S}:expiry
    KEYS[7]  pool sorted set                {S}:pool
    KEYS[8]  pool state hash                {S}:pool:state
    KEYS[9]  last-seen sorted set           {S}:last-seen
    KEYS[10] events stream                  {S}:events
    KEYS[11] pool visitors sorted set       {S}:pool-visitors (phones of other home
                                            shards of a sharded platform pool)
    KEYS[12] waiting set                    {S}:waiting
    KEYS[13] pool's high-priority set       {S}:pool:high

    ARGV[1]  now (ms)
    ARGV[2]  most messages to look at, per kind of work
    ARGV[3]  most leases per message
    ARGV[4]  presence TTL (ms)
    ARGV[5]  the command that publishes wake-ups: PUBLISH or SPUBLISH
    ARGV[6]  the shard's wake channel       {S}:wake

  Output:
    {expired, lost, returned, more}   counts; more is 1 when a batch was full
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/wakeups"

local messagesKey = KEYS[1]
local countersKey = KEYS[2]
local queueKey = KEYS[3]
local leasedKey = KEYS[4]
local leaseChecksKey = KEYS[5]
local expiryKey = KEYS[6]
local lastSeenKey = KEYS[9]
local eventsKey = KEYS[10]
local visitorsKey = KEYS[11]
local waitingKey = KEYS[12]
local pool = {key = KEYS[7], state = KEYS[8], high = KEYS[13]}

local now = tonumber(ARGV[1])
local perCall = tonumber(ARGV[2])
local maxLeases = tonumber(ARGV[3])
local presenceTtl = tonumber(ARGV[4])

local expired, lost, returned, more = 0, 0, 0, 0
local bulk = newBulk()
local changes = newBatch()
local wakes = {}

local due = rcall("ZRANGEBYSCORE", expiryKey, "-inf", now, "LIMIT", 0, perCall)
if #due == perCall then
  more = 1
end
local found = loadMessages(messagesKey, due)
for i = 1, #due do
  local msg = found[i]
  bulkAdd(bulk, "ZREM", expiryKey, due[i])
  if msg and msg.status == "queued" then
    if msg.route == "device" then
      bulkAdd(bulk, "ZREM", queueKey, queueMember(msg.device, msg))
    else
      poolRemove(pool, msg)
    end
    change(changes, eventsKey, msg, "expired", msg.device, now, nil)
    expired = expired + 1
  end
end

due = rcall("ZRANGEBYSCORE", leaseChecksKey, "-inf", now, "LIMIT", 0, perCall)
if #due == perCall then
  more = 1
end
found = loadMessages(messagesKey, due)
for i = 1, #due do
  local msg = found[i]
  if not msg or msg.status ~= "claimed" then
    bulkAdd(bulk, "ZREM", leaseChecksKey, due[i])
  elseif msg.lease_until > now then
    bulkAdd(bulk, "ZADD", leaseChecksKey, msg.lease_until, msg.id)
  elseif msg.leases >= maxLeases or now >= msg.expires then
    dropLease(bulk, leasedKey, leaseChecksKey, msg)
    change(changes, eventsKey, msg, "failed", msg.device, now, "device_lost")
    lost = lost + 1
  elseif msg.route == "pool" and not isOnline(lastSeenKey, msg.device, now, presenceTtl)
      and not isOnline(visitorsKey, msg.device, now, presenceTtl) then
    dropLease(bulk, leasedKey, leaseChecksKey, msg)
    poolReturn(bulk, pool, msg)
    bulkAdd(bulk, "ZADD", expiryKey, msg.expires, msg.id)
    change(changes, eventsKey, msg, "queued", "", now, nil)
    returned = returned + 1
  elseif msg.route == "pool" then
    bulkAdd(bulk, "ZADD", leaseChecksKey, now + presenceTtl, msg.id)
    wakeDevice(wakes, waitingKey, msg.device, now)
  else
    bulkAdd(bulk, "ZADD", leaseChecksKey, msg.expires, msg.id)
    wakeDevice(wakes, waitingKey, msg.device, now)
  end
end

bulkRun(bulk)
flush(changes, messagesKey, countersKey)
wakePool(wakes, waitingKey, now, returned)
publishWakes(wakes, ARGV[5], ARGV[6])
return {expired, lost, returned, more}

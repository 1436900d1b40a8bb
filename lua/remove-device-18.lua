--[[
  Remove a device: it disappears at once (its token stops working with it), and the
  messages it holds or waits on move on, a bounded batch per call:
  - queued for this device, or claimed by it from its own queue: failed, "device_removed";
  - claimed by it from the pool: back to the front of the pool for another phone.
  Call again while the reply says more.

  Input:
    KEYS[1]  device hash                    {S}:device:<device>
    KEYS[2]  device send window             {S}:device:<device>:window
    KEYS[3]  presence key                   {S}:device:<device>:presence
    KEYS[4]  devices set                    {S}:devices
    KEYS[5]  last-seen sorted set           {S}:last-seen
    KEYS[6]  messages hash                  {S}:messages
    KEYS[7]  counters hash                  {S}:counters
    KEYS[8]  device queue                   {S}:queue
    KEYS[9]  leased set                     {S}:leased
    KEYS[10] lease checks sorted set        {S}:lease-checks
    KEYS[11] expiry sorted set              {S}:expiry
    KEYS[12] pool sorted set                {S}:pool
    KEYS[13] pool state hash                {S}:pool:state
    KEYS[14] events stream                  {S}:events
    KEYS[15] waiting set                    {S}:waiting
    KEYS[16] pool's high-priority set       {S}:pool:high
    KEYS[17] failing phones hash            {S}:pool-failures
    KEYS[18] offline set                    {S}:offline (presence-changes: no event
                                            for a removed device)

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  most messages to move in this call
    ARGV[4]  the command that publishes wake-ups: PUBLISH or SPUBLISH
    ARGV[5]  the shard's wake channel       {S}:wake

  A message back in the pool wakes one waiting phone (includes/wakeups).

  Output:
    {failed, returned, more}   counts; more is 1 when messages are left to move
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/wakeups"

local deviceKey = KEYS[1]
local windowKey = KEYS[2]
local presenceKey = KEYS[3]
local devicesKey = KEYS[4]
local lastSeenKey = KEYS[5]
local messagesKey = KEYS[6]
local countersKey = KEYS[7]
local queueKey = KEYS[8]
local leasedKey = KEYS[9]
local leaseChecksKey = KEYS[10]
local expiryKey = KEYS[11]
local poolKey = KEYS[12]
local poolStateKey = KEYS[13]
local eventsKey = KEYS[14]

local device = ARGV[1]
local now = tonumber(ARGV[2])
local perCall = tonumber(ARGV[3])

rcall("DEL", deviceKey, windowKey, presenceKey)
rcall("SREM", devicesKey, device)
rcall("ZREM", lastSeenKey, device)
rcall("ZREM", KEYS[15], device)
rcall("HDEL", KEYS[17], device)
rcall("SREM", KEYS[18], device)

local bulk = newBulk()
local changes = newBatch()
local failed, returned = 0, 0

local queued = rcall("ZRANGEBYLEX", queueKey, "[" .. device .. ":", "(" .. device .. ";", "LIMIT", 0, perCall)
local ids = {}
for i = 1, #queued do
  ids[i] = queuedId(queued[i], device)
  bulkAdd(bulk, "ZREM", queueKey, queued[i])
  bulkAdd(bulk, "ZREM", expiryKey, ids[i])
end
local found = loadMessages(messagesKey, ids)
for i = 1, #ids do
  if found[i] and found[i].status == "queued" then
    change(changes, eventsKey, found[i], "failed", device, now, "device_removed")
    failed = failed + 1
  end
end

local held = rcall("ZRANGEBYLEX", leasedKey, "[" .. device .. ":", "(" .. device .. ";", "LIMIT", 0,
  perCall - #queued)
ids = {}
for i = 1, #held do
  ids[i] = string.match(held[i], ":([^:]+)$")
  bulkAdd(bulk, "ZREM", leasedKey, held[i])
  bulkAdd(bulk, "ZREM", leaseChecksKey, ids[i])
end
found = loadMessages(messagesKey, ids)
for i = 1, #ids do
  local msg = found[i]
  if msg and msg.status == "claimed" then
    if msg.route == "pool" and now < msg.expires then
      poolReturn(bulk, {key = poolKey, state = poolStateKey, high = KEYS[16]}, msg)
      bulkAdd(bulk, "ZADD", expiryKey, msg.expires, msg.id)
      change(changes, eventsKey, msg, "queued", "", now, nil)
      returned = returned + 1
    else
      change(changes, eventsKey, msg, "failed", device, now, "device_removed")
      failed = failed + 1
    end
  end
end

bulkRun(bulk)
flush(changes, messagesKey, countersKey)
local wakes = {}
wakePool(wakes, KEYS[15], now, returned)
publishWakes(wakes, ARGV[4], ARGV[5])
local more = 0
if #queued + #held >= perCall then
  more = 1
end
return {failed, returned, more}

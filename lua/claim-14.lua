--[[
  Claim messages for one device: first its own claimed messages whose lease ran out
  (redelivered to the same phone, which de-duplicates by id), then its own queue, then
  its shard's pool (only while the device is online). Stops at the first message that
  does not fit the device's send budget, so order is kept. Each claimed message is
  leased until now + lease.

  Input:
    KEYS[1]  device hash                    {S}:device:<device>
    KEYS[2]  device send window             {S}:device:<device>:window
    KEYS[3]  messages hash                  {S}:messages
    KEYS[4]  counters hash                  {S}:counters
    KEYS[5]  device queue                   {S}:queue
    KEYS[6]  leased set                     {S}:leased
    KEYS[7]  lease checks sorted set        {S}:lease-checks
    KEYS[8]  expiry sorted set              {S}:expiry
    KEYS[9]  pool sorted set                {S}:pool
    KEYS[10] pool state hash                {S}:pool:state
    KEYS[11] last-seen sorted set           {S}:last-seen
    KEYS[12] events stream                  {S}:events
    KEYS[13] device's poll rate limiter     {S}:rate:tasks:<device>
    KEYS[14] shard owner's account hash     {S}:account (absent for a platform pool)

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  most messages to return (1..100)
    ARGV[4]  lease (ms)
    ARGV[5]  most leases per message
    ARGV[6]  presence TTL (ms)
    ARGV[7]  polls per minute, unless the account hash sets tasks_per_minute
    ARGV[8]  poll burst, unless the account hash sets tasks_burst

  Output:
    {{remaining, burst, reset_ms}, {id, to, body, segments}, ...}: the poll rate limiter
    after this claim, then the claimed messages, oldest first (none when nothing fits)

  Budget: the device hash's per_minute (segments in any 60 s) and per_day (segments
  per UTC day). A message longer than a whole budget may go out when that budget is
  wholly unused. Redelivery does not charge the budget again. The window holds one
  entry per charging claim, "<now>:<last id>:<segments>", and the device hash keeps
  their sum (window_used), so a claim reads only the entries that leave the window.

  A queued message whose TTL has passed is not handed out: it becomes expired here,
  as the sweep would make it.

  Errors:
    DEVICE_NOT_FOUND               no such device (removed, or never paired)
    RATE_LIMITED <retry after ms> <remaining> <reset ms> <burst>
                                   polled too often; nothing changed
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/gcra"

local deviceKey = KEYS[1]
local windowKey = KEYS[2]
local messagesKey = KEYS[3]
local countersKey = KEYS[4]
local queueKey = KEYS[5]
local leasedKey = KEYS[6]
local leaseChecksKey = KEYS[7]
local expiryKey = KEYS[8]
local poolKey = KEYS[9]
local poolStateKey = KEYS[10]
local lastSeenKey = KEYS[11]
local eventsKey = KEYS[12]
local rateKey = KEYS[13]
local accountKey = KEYS[14]

local device = ARGV[1]
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local leaseMs = tonumber(ARGV[4])
local maxLeases = tonumber(ARGV[5])
local presenceTtl = tonumber(ARGV[6])
local pollsPerMinute = tonumber(ARGV[7])
local pollBurst = tonumber(ARGV[8])

local limits = rcall("HMGET", deviceKey, "per_minute", "per_day", "day", "day_used", "window_used")
if not limits[1] then
  return redis.error_reply("DEVICE_NOT_FOUND " .. device)
end
local overrides = rcall("HMGET", accountKey, "tasks_per_minute", "tasks_burst")
if tonumber(overrides[1] or "") and tonumber(overrides[1]) > 0 then
  pollsPerMinute = tonumber(overrides[1])
end
if tonumber(overrides[2] or "") and tonumber(overrides[2]) > 0 then
  pollBurst = tonumber(overrides[2])
end
local rate = gcraCheck(rateKey, now, 60000 / pollsPerMinute, pollBurst, 1)
if not rate.allowed then
  return gcraRefusal(rate)
end
gcraCommit(rate, now)
local perMinute = tonumber(limits[1])
local perDay = tonumber(limits[2])
local today = math.floor(now / 86400000)
local dayUsed = 0
if tonumber(limits[3]) == today then
  dayUsed = tonumber(limits[4])
end
local windowBefore = tonumber(limits[5] or "0")
local minuteUsed = windowBefore
local leaving = rcall("ZRANGEBYSCORE", windowKey, "-inf", now - 60000)
if #leaving > 0 then
  for i = 1, #leaving do
    minuteUsed = minuteUsed - tonumber(string.match(leaving[i], ":(%d+)$"))
  end
  rcall("ZREMRANGEBYSCORE", windowKey, "-inf", now - 60000)
end

local function fits(segments)
  local minuteOk = minuteUsed + segments <= perMinute or (minuteUsed == 0 and segments > perMinute)
  local dayOk = dayUsed + segments <= perDay or (dayUsed == 0 and segments > perDay)
  return minuteOk and dayOk
end

local bulk = newBulk()
local batch = newBatch()
local claimed = {}
local charged = 0
local function hand(msg)
  claimed[#claimed + 1] = {msg.id, msg.to, msg.body, tostring(msg.segments)}
end

local function claim(msg)
  bulkAdd(bulk, "ZREM", expiryKey, msg.id)
  takeLease(bulk, leasedKey, leaseChecksKey, msg, device, now, leaseMs)
  minuteUsed = minuteUsed + msg.segments
  dayUsed = dayUsed + msg.segments
  charged = charged + msg.segments
  change(batch, eventsKey, msg, "claimed", device, now, nil)
  hand(msg)
end

local function expire(msg)
  bulkAdd(bulk, "ZREM", expiryKey, msg.id)
  change(batch, eventsKey, msg, "expired", msg.device, now, nil)
end

-- 1. This device's own leases that ran out.
local expiredLeases = rcall("ZRANGEBYLEX", leasedKey, "[" .. device .. ":",
  "(" .. device .. ":" .. string.format("%015d", now + 1), "LIMIT", 0, limit)
local ids = {}
for i = 1, #expiredLeases do
  ids[i] = string.match(expiredLeases[i], ":([^:]+)$")
end
local held = loadMessages(messagesKey, ids)
for i = 1, #expiredLeases do
  local msg = held[i]
  if not msg or msg.status ~= "claimed" then
    bulkAdd(bulk, "ZREM", leasedKey, expiredLeases[i])
  elseif msg.leases >= maxLeases or now >= msg.expires then
    dropLease(bulk, leasedKey, leaseChecksKey, msg)
    change(batch, eventsKey, msg, "failed", device, now, "device_lost")
  else
    renewLease(bulk, leasedKey, leaseChecksKey, msg, now, leaseMs)
    keep(batch, msg)
    hand(msg)
  end
end

-- 2. This device's own queue.
local budgetFull = false
if #claimed < limit then
  local queued = rcall("ZRANGEBYLEX", queueKey, "[" .. device .. ":", "(" .. device .. ";",
    "LIMIT", 0, limit - #claimed)
  ids = {}
  for i = 1, #queued do
    ids[i] = string.sub(queued[i], #device + 2)
  end
  local found = loadMessages(messagesKey, ids)
  for i = 1, #queued do
    local msg = found[i]
    if msg and now < msg.expires and not fits(msg.segments) then
      budgetFull = true
      break
    end
    bulkAdd(bulk, "ZREM", queueKey, queued[i])
    if msg and now >= msg.expires then
      expire(msg)
    elseif msg then
      claim(msg)
    end
  end
end

-- 3. The pool, fair across senders, only for a device that is online.
if not budgetFull and #claimed < limit and isOnline(lastSeenKey, device, now, presenceTtl) then
  local pooled = rcall("ZRANGE", poolKey, 0, limit - #claimed - 1, "WITHSCORES")
  ids = {}
  for i = 1, #pooled, 2 do
    ids[#ids + 1] = pooled[i]
  end
  local found = loadMessages(messagesKey, ids)
  local taken, lastScore = {}, nil
  for i = 1, #ids do
    local msg = found[i]
    if not msg then
      bulkAdd(bulk, "ZREM", poolKey, ids[i])
    elseif now >= msg.expires then
      poolRemove(poolKey, poolStateKey, msg.account, msg.id)
      expire(msg)
    elseif not fits(msg.segments) then
      break
    else
      taken[#taken + 1] = {msg.id, msg.account}
      lastScore = pooled[2 * i]
      claim(msg)
    end
  end
  if #taken > 0 then
    poolTaken(bulk, poolKey, poolStateKey, taken, lastScore)
  end
end

bulkRun(bulk)
flush(batch, messagesKey, countersKey)
if charged > 0 then
  rcall("ZADD", windowKey, now, now .. ":" .. claimed[#claimed][1] .. ":" .. charged)
  rcall("HSET", deviceKey, "day", today, "day_used", dayUsed, "window_used", minuteUsed)
elseif minuteUsed ~= windowBefore then
  rcall("HSET", deviceKey, "window_used", minuteUsed)
end
table.insert(claimed, 1, {rate.remaining, pollBurst, rate.reset})
return claimed

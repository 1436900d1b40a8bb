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

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  most messages to return (1..100)
    ARGV[4]  lease (ms)
    ARGV[5]  most leases per message
    ARGV[6]  presence TTL (ms)

  Output:
    array of {id, to, body, segments}, oldest first; empty when nothing fits

  Budget: the device's limits per_minute (segments in any 60 s) and per_day (segments
  per UTC day). A message longer than a whole budget may go out when that budget is
  wholly unused. Redelivery does not charge the budget again.

  Errors:
    DEVICE_NOT_FOUND               no such device (removed, or never paired)
]]
local rcall = redis.call
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"

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

local device = ARGV[1]
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local leaseMs = tonumber(ARGV[4])
local maxLeases = tonumber(ARGV[5])
local presenceTtl = tonumber(ARGV[6])

local limits = rcall("HMGET", deviceKey, "per_minute", "per_day", "day", "day_used")
if not limits[1] then
  return redis.error_reply("DEVICE_NOT_FOUND " .. device)
end
local perMinute = tonumber(limits[1])
local perDay = tonumber(limits[2])
local today = math.floor(now / 86400000)
local dayUsed = 0
if tonumber(limits[3]) == today then
  dayUsed = tonumber(limits[4])
end

rcall("ZREMRANGEBYSCORE", windowKey, "-inf", now - 60000)
local minuteUsed = 0
local recent = rcall("ZRANGE", windowKey, 0, -1)
for i = 1, #recent do
  minuteUsed = minuteUsed + tonumber(string.match(recent[i], ":(%d+)$"))
end

local function fits(segments)
  local minuteOk = minuteUsed + segments <= perMinute or (minuteUsed == 0 and segments > perMinute)
  local dayOk = dayUsed + segments <= perDay or (dayUsed == 0 and segments > perDay)
  return minuteOk and dayOk
end

local claimed = {}
local function hand(msg)
  claimed[#claimed + 1] = {msg.id, msg.to, msg.body, tostring(msg.segments)}
end

local function claim(msg)
  rcall("ZREM", expiryKey, msg.id)
  takeLease(leasedKey, leaseChecksKey, msg, device, now, leaseMs)
  rcall("ZADD", windowKey, now, msg.id .. ":" .. msg.segments)
  minuteUsed = minuteUsed + msg.segments
  dayUsed = dayUsed + msg.segments
  setStatus(messagesKey, countersKey, eventsKey, msg, "claimed", device, now, nil)
  hand(msg)
end

-- 1. This device's own leases that ran out.
local expiredLeases = rcall("ZRANGEBYLEX", leasedKey, "[" .. device .. ":",
  "(" .. device .. ":" .. string.format("%015d", now + 1), "LIMIT", 0, limit)
for i = 1, #expiredLeases do
  local id = string.match(expiredLeases[i], ":([^:]+)$")
  local msg = loadMessage(messagesKey, id)
  if not msg or msg.status ~= "claimed" then
    rcall("ZREM", leasedKey, expiredLeases[i])
  elseif msg.leases >= maxLeases or now >= msg.expires then
    dropLease(leasedKey, leaseChecksKey, msg)
    setStatus(messagesKey, countersKey, eventsKey, msg, "failed", device, now, "device_lost")
  else
    dropLease(leasedKey, leaseChecksKey, msg)
    takeLease(leasedKey, leaseChecksKey, msg, device, now, leaseMs)
    saveMessage(messagesKey, msg)
    hand(msg)
  end
end

-- 2. This device's own queue.
local budgetFull = false
if #claimed < limit then
  local queued = rcall("ZRANGEBYLEX", queueKey, "[" .. device .. ":", "(" .. device .. ";",
    "LIMIT", 0, limit - #claimed)
  for i = 1, #queued do
    local msg = loadMessage(messagesKey, string.sub(queued[i], #device + 2))
    if msg and not fits(msg.segments) then
      budgetFull = true
      break
    end
    rcall("ZREM", queueKey, queued[i])
    if msg then
      claim(msg)
    end
  end
end

-- 3. The pool, fair across senders, only for a device that is online.
if not budgetFull and #claimed < limit and isOnline(lastSeenKey, device, now, presenceTtl) then
  local pooled = rcall("ZRANGE", poolKey, 0, limit - #claimed - 1, "WITHSCORES")
  for i = 1, #pooled, 2 do
    local msg = loadMessage(messagesKey, pooled[i])
    if not msg then
      rcall("ZREM", poolKey, pooled[i])
    elseif not fits(msg.segments) then
      break
    else
      poolTaken(poolKey, poolStateKey, msg.account, msg.id, pooled[i + 1])
      claim(msg)
    end
  end
end

if dayUsed > 0 then
  rcall("HSET", deviceKey, "day", today, "day_used", dayUsed)
end
return claimed

--[[
  Queue one message or a whole batch for one sender, all or nothing.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  daily quota hash               {S}:quota
    KEYS[4]  idempotency key                {S}:idempotency:<account>:<key>
    KEYS[5]  expiry sorted set              {S}:expiry
    KEYS[6]  events stream                  {S}:events
    KEYS[7]  pool sorted set                {S}:pool
    KEYS[8]  pool state hash                {S}:pool:state
    KEYS[9]  device queue                   {S}:queue
    KEYS[10] devices set                    {S}:devices
    KEYS[11] sender's message index         {S}:sent:<account>

    ARGV[1]  account id
    ARGV[2]  now (ms)
    ARGV[3]  message TTL (ms)
    ARGV[4]  daily quota (messages); the day is floor(now / 86400000)
    ARGV[5]  request fingerprint for the idempotency key, "" for none
    ARGV[6]  idempotency window (ms)
    ARGV[7]  number of messages N (1..1000)
    then six arguments per message:
      id, route ("device" | "pool"), device id ("" for pool), to, body, segments

  Output:
    {"new", id1, ..., idN}         queued
    {"duplicate", id1, ..., idN}   same key and fingerprint seen before: nothing queued

  Errors:
    DEVICE_NOT_FOUND <index>       a device route names no device of this shard
    QUOTA_EXCEEDED <used> <quota>  the batch would pass the daily quota
    IDEMPOTENCY_KEY_REUSED         same key, other request
    BAD_REQUEST <reason>           malformed arguments
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"

local messagesKey = KEYS[1]
local countersKey = KEYS[2]
local quotaKey = KEYS[3]
local idempotencyKey = KEYS[4]
local expiryKey = KEYS[5]
local eventsKey = KEYS[6]
local poolKey = KEYS[7]
local poolStateKey = KEYS[8]
local queueKey = KEYS[9]
local devicesKey = KEYS[10]
local sentIndexKey = KEYS[11]

local account = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local fingerprint = ARGV[5]
local idempotencyMs = tonumber(ARGV[6])
local n = tonumber(ARGV[7])

if not n or n < 1 or n > 1000 or #ARGV ~= 7 + 6 * n then
  return redis.error_reply("BAD_REQUEST message count does not match arguments")
end

if fingerprint ~= "" then
  local seen = rcall("GET", idempotencyKey)
  if seen then
    local sep = string.find(seen, "|", 1, true)
    if string.sub(seen, 1, sep - 1) ~= fingerprint then
      return redis.error_reply("IDEMPOTENCY_KEY_REUSED the key was used for another request")
    end
    local reply = {"duplicate"}
    for id in string.gmatch(string.sub(seen, sep + 1), "[^,]+") do
      reply[#reply + 1] = id
    end
    return reply
  end
end

local known = {}
for i = 0, n - 1 do
  local base = 8 + 6 * i
  local route = ARGV[base + 1]
  local device = ARGV[base + 2]
  if route == "device" then
    if known[device] == nil then
      known[device] = rcall("SISMEMBER", devicesKey, device) == 1
    end
    if not known[device] then
      return redis.error_reply("DEVICE_NOT_FOUND " .. i)
    end
  elseif route ~= "pool" then
    return redis.error_reply("BAD_REQUEST unknown route")
  end
  if not tonumber(ARGV[base + 5]) then
    return redis.error_reply("BAD_REQUEST segments must be a number")
  end
end

local day = math.floor(now / 86400000)
local quotaState = rcall("HMGET", quotaKey, account .. ":day", account .. ":used")
local used = 0
if tonumber(quotaState[1]) == day then
  used = tonumber(quotaState[2])
end
if used + n > quota then
  return redis.error_reply("QUOTA_EXCEEDED " .. used .. " " .. quota)
end
rcall("HSET", quotaKey, account .. ":day", day, account .. ":used", used + n)

local bulk = newBulk()
local batch = newBatch()
local reply = {"new"}
local pooled = {}
for i = 0, n - 1 do
  local base = 8 + 6 * i
  local id = ARGV[base]
  local route = ARGV[base + 1]
  local msg = {
    id = id, account = account, to = ARGV[base + 3], body = ARGV[base + 4],
    segments = tonumber(ARGV[base + 5]), route = route, device = ARGV[base + 2],
    status = "queued", created = now, expires = now + ttl, leases = 0, lease_until = 0,
    updated = now, error = ""
  }
  if route == "device" then
    bulkAdd(bulk, "ZADD", queueKey, 0, queueMember(msg.device, id))
  else
    msg.device = ""
    pooled[#pooled + 1] = id
  end
  bulkAdd(bulk, "ZADD", expiryKey, msg.expires, id)
  bulkAdd(bulk, "ZADD", sentIndexKey, 0, id)
  created(batch, eventsKey, msg)
  reply[#reply + 1] = id
end
if #pooled > 0 then
  poolPush(bulk, poolKey, poolStateKey, account, pooled)
end
bulkRun(bulk)
flush(batch, messagesKey, countersKey)

if fingerprint ~= "" then
  rcall("SET", idempotencyKey, fingerprint .. "|" .. table.concat(reply, ",", 2), "PX", idempotencyMs)
end
return reply

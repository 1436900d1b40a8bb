--[[
  Queue one message or a whole batch for one sender, all or nothing. A message to a
  number that wrote to the sender moves that number's inbox thread to it
  (includes/threads.lua).

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
    KEYS[12] sender's send rate limiter     {S}:rate:sends:<account>
    KEYS[13] sender's suppression list      {S}:suppression:<account>
    KEYS[14] sender's inbox threads         {S}:threads:<account>
    KEYS[15] each thread's newest id        {S}:threads:<account>:newest
    KEYS[16] waiting set                    {S}:waiting
    KEYS[17] scheduled sorted set           {S}:scheduled
    KEYS[18] pool's high-priority set       {S}:pool:high
    KEYS[19] credentials epochs hash        {S}:credentials

    ARGV[1]  account id
    ARGV[2]  now (ms)
    ARGV[3]  message TTL (ms)
    ARGV[4]  daily quota (messages); the day is floor(now / 86400000)
    ARGV[5]  request fingerprint for the idempotency key, "" for none
    ARGV[6]  idempotency window (ms)
    ARGV[7]  number of messages N (1..1000)
    ARGV[8]  send rate: ms per message (GCRA emission interval, see includes/gcra.lua)
    ARGV[9]  send burst (messages); a batch costs its message count
    ARGV[10] the command that publishes wake-ups: PUBLISH or SPUBLISH
    ARGV[11] the shard's wake channel       {S}:wake
    ARGV[12] the sender's credentials epoch the caller admitted its API key under
             (KEYS[19]'s field for the account, "0" when unset), "" to skip the check
    ARGV[13] campaign id the messages belong to, "" for none (kept in each record as
             "campaign"; its messages are counted under "c:<campaign>:<status>")
    then eleven arguments per message:
      id, route ("device" | "pool"), device id ("" for pool), to, body, segments,
      send_at (ms; 0: now), valid for (ms; 0: the message TTL), SIM slot (0: none),
      priority ("normal" | "high"), encrypted ("1": the body is an end-to-end
      envelope, kept as the record's "encrypted": true; "0": plain text)

  A message whose send_at is later than now is "scheduled": it waits in the
  scheduled set (id -> send_at), neither queued nor claimable, until release-due
  queues it. Its TTL (or valid for) counts from send_at; "expires" is set either way.

  Output:
    {"new", remaining, reset_ms, id1, ..., idN}        queued
    {"duplicate", remaining, reset_ms, id1, ..., idN}  same key and fingerprint seen
                                                       before: nothing queued, no rate used
    remaining and reset_ms describe the send rate limiter after this request.

  Wake-ups (includes/wakeups): each device a message is queued for, when it waits,
  and one waiting phone per message put in the pool.

  Checks run in this order and a failed one changes nothing: credentials epoch,
  idempotency, devices, suppressed recipients, rate, quota.

  Errors:
    STALE_CREDENTIALS              the epoch moved since the caller admitted the key (a
                                   key revoked or the account's limits changed): check
                                   the key again
    DEVICE_NOT_FOUND <i>[,<i>...]  these messages name no device of this shard
    RECIPIENT_OPTED_OUT <i>[,<i>...]  these messages go to numbers on the sender's
                                   suppression list (they replied STOP, or were added)
    RATE_LIMITED <retry after ms> <remaining> <reset ms> <burst>
    QUOTA_EXCEEDED <used> <quota>  the batch would pass the daily quota
    IDEMPOTENCY_KEY_REUSED         same key, other request
    BAD_REQUEST <reason>           malformed arguments
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/gcra"
--- @include "includes/threads"
--- @include "includes/wakeups"

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
local rateKey = KEYS[12]
local suppressionKey = KEYS[13]
local threadsKey = KEYS[14]
local newestKey = KEYS[15]

local account = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local fingerprint = ARGV[5]
local idempotencyMs = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local sendInterval = tonumber(ARGV[8])
local sendBurst = tonumber(ARGV[9])
local wakeCommand = ARGV[10]
local wakeChannel = ARGV[11]
local admittedEpoch = ARGV[12]
local campaign = ARGV[13]
local FIRST = 14
local PER = 11

if not n or n < 1 or n > 1000 or #ARGV ~= FIRST - 1 + PER * n or not sendInterval or not sendBurst then
  return redis.error_reply("BAD_REQUEST message count does not match arguments")
end
if wakeCommand ~= "PUBLISH" and wakeCommand ~= "SPUBLISH" then
  return redis.error_reply("BAD_REQUEST unknown wake-up command")
end
if admittedEpoch ~= "" and (rcall("HGET", KEYS[19], account) or "0") ~= admittedEpoch then
  return redis.error_reply("STALE_CREDENTIALS the API key must be checked again")
end

if fingerprint ~= "" then
  local seen = rcall("GET", idempotencyKey)
  if seen then
    local sep = string.find(seen, "|", 1, true)
    if string.sub(seen, 1, sep - 1) ~= fingerprint then
      return redis.error_reply("IDEMPOTENCY_KEY_REUSED the key was used for another request")
    end
    local d = gcraCheck(rateKey, now, sendInterval, sendBurst, 0)
    local reply = {"duplicate", d.remaining, d.reset}
    for id in string.gmatch(string.sub(seen, sep + 1), "[^,]+") do
      reply[#reply + 1] = id
    end
    return reply
  end
end

local known = {}
local missing = {}
for i = 0, n - 1 do
  local base = FIRST + PER * i
  local route = ARGV[base + 1]
  local device = ARGV[base + 2]
  if not (tonumber(ARGV[base + 6]) and tonumber(ARGV[base + 7]) and tonumber(ARGV[base + 8])) then
    return redis.error_reply("BAD_REQUEST send_at, valid for and SIM slot must be numbers")
  end
  if route == "device" then
    if known[device] == nil then
      known[device] = rcall("SISMEMBER", devicesKey, device) == 1
    end
    if not known[device] then
      missing[#missing + 1] = i
    end
  elseif route ~= "pool" then
    return redis.error_reply("BAD_REQUEST unknown route")
  end
  if not tonumber(ARGV[base + 5]) then
    return redis.error_reply("BAD_REQUEST segments must be a number")
  end
  if ARGV[base + 9] ~= "normal" and ARGV[base + 9] ~= "high" then
    return redis.error_reply("BAD_REQUEST unknown priority")
  end
  if ARGV[base + 10] ~= "0" and ARGV[base + 10] ~= "1" then
    return redis.error_reply("BAD_REQUEST encrypted must be 0 or 1")
  end
end
if #missing > 0 then
  return redis.error_reply("DEVICE_NOT_FOUND " .. table.concat(missing, ","))
end

-- Each message's "to", in order, read from the arguments once, when first needed.
local recipientList
local function recipients()
  if not recipientList then
    recipientList = {}
    for i = 0, n - 1 do
      recipientList[i + 1] = ARGV[FIRST + PER * i + 3]
    end
  end
  return recipientList
end

if rcall("EXISTS", suppressionKey) == 1 then
  local found = rcall("HMGET", suppressionKey, unpack(recipients()))
  local suppressed = {}
  for i = 1, n do
    if found[i] then
      suppressed[#suppressed + 1] = i - 1
    end
  end
  if #suppressed > 0 then
    return redis.error_reply("RECIPIENT_OPTED_OUT " .. table.concat(suppressed, ","))
  end
end

local rate = gcraCheck(rateKey, now, sendInterval, sendBurst, n)
if not rate.allowed then
  return gcraRefusal(rate)
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
gcraCommit(rate, now)

-- The recipients that wrote to the sender: their threads move to the messages sent now.
local threads = {}
if rcall("EXISTS", newestKey) == 1 then
  local to = recipients()
  local found = rcall("HMGET", newestKey, unpack(to))
  for i = 1, n do
    if found[i] then
      threads[to[i]] = found[i]
    end
  end
end

local bulk = newBulk()
local batch = newBatch()
local reply = {"new", rate.remaining, rate.reset}
local pooled = {}
local wakes = {}
for i = 0, n - 1 do
  local base = FIRST + PER * i
  local id = ARGV[base]
  local route = ARGV[base + 1]
  local sendAt = tonumber(ARGV[base + 6])
  local validMs = tonumber(ARGV[base + 7])
  local simSlot = tonumber(ARGV[base + 8])
  local due = math.max(now, sendAt)
  local life = ttl
  if validMs > 0 then
    life = validMs
  end
  local msg = {
    id = id, account = account, to = ARGV[base + 3], body = ARGV[base + 4],
    segments = tonumber(ARGV[base + 5]), route = route, device = ARGV[base + 2],
    status = "queued", created = now, expires = due + life, leases = 0, lease_until = 0,
    updated = now, error = ""
  }
  if sendAt > 0 then
    msg.send_at = sendAt
  end
  if simSlot > 0 then
    msg.sim_slot = simSlot
  end
  if ARGV[base + 9] == "high" then
    msg.priority = "high"
  end
  if ARGV[base + 10] == "1" then
    msg.encrypted = true
  end
  if campaign ~= "" then
    msg.campaign = campaign
  end
  if route ~= "device" then
    msg.device = ""
  end
  if sendAt > now then
    msg.status = "scheduled"
    bulkAdd(bulk, "ZADD", KEYS[17], sendAt, id)
  else
    if route == "device" then
      bulkAdd(bulk, "ZADD", queueKey, 0, queueMember(msg.device, msg))
      wakeDevice(wakes, KEYS[16], msg.device, now)
    else
      pooled[#pooled + 1] = msg
    end
    bulkAdd(bulk, "ZADD", expiryKey, msg.expires, id)
  end
  bulkAdd(bulk, "ZADD", sentIndexKey, 0, id)
  if threads[msg.to] then
    threads[msg.to] = moveThread(threadsKey, newestKey, msg.to, id, threads[msg.to])
  end
  created(batch, eventsKey, msg)
  reply[#reply + 1] = id
end
if #pooled > 0 then
  poolPush(bulk, {key = poolKey, state = poolStateKey, high = KEYS[18]}, account, pooled)
end
bulkRun(bulk)
flush(batch, messagesKey, countersKey)
wakePool(wakes, KEYS[16], now, #pooled)
publishWakes(wakes, wakeCommand, wakeChannel)

if fingerprint ~= "" then
  rcall("SET", idempotencyKey, fingerprint .. "|" .. table.concat(reply, ",", 4), "PX", idempotencyMs)
end
return reply

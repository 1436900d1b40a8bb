--[[
  A device reports what became of a message it holds: sent, delivered or failed.
  Allowed moves: claimed -> sent | delivered | failed, sent -> delivered | failed.
  Repeating the current status is a no-op; any other move is a conflict.

  A retryable failure (no service, radio off) of a claimed message puts it back:
  claimed -> queued, at once, while it has attempts left (its leases so far are its
  attempts) and its TTL has not passed; else the failure is final. A pool message goes
  back to the front of the pool for any phone (a waiting one is woken); a device
  message waits in the scheduled set and is queued for its phone again after the retry
  delay (release-due). The same report again is a repeat. A report
  accepted in the device's home shard refreshes its presence, as a heartbeat does.
  Each accepted report that is not retryable counts toward the phone's run of failures
  in this shard (includes/failures).
  A move to sent may name the SIM slot that sent the message.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  leased set                     {S}:leased
    KEYS[4]  lease checks sorted set        {S}:lease-checks
    KEYS[5]  events stream                  {S}:events
    KEYS[6]  pool recipients hash           {S}:pool-recipients
    KEYS[7]  their ages                     {S}:pool-recipients:age
    KEYS[8]  device hash                    {S}:device:<device>
    KEYS[9]  presence key                   {S}:device:<device>:presence
    KEYS[10] last-seen sorted set           {S}:last-seen
    KEYS[11] expiry sorted set              {S}:expiry
    KEYS[12] pool sorted set                {S}:pool
    KEYS[13] pool state hash                {S}:pool:state
    KEYS[14] scheduled sorted set           {S}:scheduled
    KEYS[15] waiting set                    {S}:waiting
    KEYS[16] pool's high-priority set       {S}:pool:high
    KEYS[17] failing phones hash            {S}:pool-failures

    ARGV[1]  device id
    ARGV[2]  message id
    ARGV[3]  new status: "sent" | "delivered" | "failed"
    ARGV[4]  error text (kept with "failed"; "" otherwise)
    ARGV[5]  now (ms)
    ARGV[6]  how long a platform pool phone's recipient is remembered (ms); 0 in any
             other shard. A pool message reported sent notes "<device>:<to>" ->
             "<account>|<now>", so an SMS that number sends to that phone later belongs
             to that account; entries older than this are dropped, a few per call.
    ARGV[7]  presence TTL (ms) when this is the device's home shard; 0 in any other
    ARGV[8]  1: the failure is retryable; 0: it is not
    ARGV[9]  most attempts per message (leases)
    ARGV[10] retry delay of a device message (ms)
    ARGV[11] the command that publishes wake-ups: PUBLISH or SPUBLISH
    ARGV[12] the shard's wake channel       {S}:wake
    ARGV[13] failed reports in a row after which pool claims skip the phone
    ARGV[14] for how long (ms)
    ARGV[15] with "sent": the SIM slot (1-4) that sent it, kept as the message's
             sim_slot; 0: the phone did not say (the slot asked for, if any, stays)
    ARGV[16] with "sent" of an end-to-end encrypted message: the segments it took
             (the phone counted them from the text), kept as its segments in place of
             the upper bound charged when it was claimed; 0: the phone did not say.
             Ignored for a plain message, whose count the server made itself.

  Output:
    {id, status, changed, retry_at}   changed is "1" for a move, "0" for a repeat;
                                      retry_at: when a device message put back is
                                      queued again (ms), else 0

  Errors:
    MESSAGE_NOT_FOUND              no such message, or it is not this device's (held by or
                                   queued for another device, or waiting in a pool)
    INVALID_TRANSITION <from> <to> a move the rules above do not allow, also on a message
                                   queued for this device that it has not claimed yet
    BAD_REQUEST <reason>           a status other than the three above
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/leases"
--- @include "includes/pool"
--- @include "includes/wakeups"
--- @include "includes/failures"

local messagesKey = KEYS[1]
local countersKey = KEYS[2]
local leasedKey = KEYS[3]
local leaseChecksKey = KEYS[4]
local eventsKey = KEYS[5]

local device = ARGV[1]
local id = ARGV[2]
local status = ARGV[3]
local err = ARGV[4]
local now = tonumber(ARGV[5])
local rememberMs = tonumber(ARGV[6])
local sentFromSlot = tonumber(ARGV[15])
local sentSegments = tonumber(ARGV[16])

local allowed = {
  claimed = {sent = true, delivered = true, failed = true},
  sent = {delivered = true, failed = true},
}
if status ~= "sent" and status ~= "delivered" and status ~= "failed" then
  return redis.error_reply("BAD_REQUEST unknown status")
end

local presenceTtl = tonumber(ARGV[7])

-- A report is the phone at work: it is online, as after a heartbeat.
local function seen()
  if presenceTtl > 0 and rcall("EXISTS", KEYS[8]) == 1 then
    rcall("HSET", KEYS[8], "last_seen", now)
    rcall("SET", KEYS[9], now, "PX", presenceTtl)
    rcall("ZADD", KEYS[10], now, device)
  end
end

local retryable = ARGV[8] == "1" and status == "failed"

local msg = loadMessage(messagesKey, id)
if msg and retryable and msg.status == "queued" and msg.put_back_by == device then
  seen()
  return {id, "queued", "0", 0}  -- the same retryable report again
end
if not msg or msg.device ~= device then
  return redis.error_reply("MESSAGE_NOT_FOUND " .. id)
end
if msg.status == status then
  seen()
  return {id, status, "0", 0}
end
if not (allowed[msg.status] and allowed[msg.status][status]) then
  return redis.error_reply("INVALID_TRANSITION " .. msg.status .. " " .. status)
end
local bulk = newBulk()
local batch = newBatch()
if msg.status == "claimed" then
  dropLease(bulk, leasedKey, leaseChecksKey, msg)
end
if status ~= "failed" then
  err = nil
elseif err == "" then
  err = "unknown"
end
if retryable and msg.status == "claimed" and msg.leases < tonumber(ARGV[9]) and now < msg.expires then
  dropLease(bulk, leasedKey, leaseChecksKey, msg)
  msg.put_back_by = device
  local retryAt = 0
  local wakes = {}
  if msg.route == "pool" then
    poolReturn(bulk, {key = KEYS[12], state = KEYS[13], high = KEYS[16]}, msg)
    change(batch, eventsKey, msg, "queued", "", now, err)
    wakePool(wakes, KEYS[15], now, 1)
  else
    retryAt = now + tonumber(ARGV[10])
    bulkAdd(bulk, "ZADD", KEYS[14], retryAt, msg.id)
    change(batch, eventsKey, msg, "queued", device, now, err)
  end
  bulkAdd(bulk, "ZADD", KEYS[11], msg.expires, msg.id)
  bulkRun(bulk)
  flush(batch, messagesKey, countersKey)
  publishWakes(wakes, ARGV[11], ARGV[12])
  seen()
  return {id, "queued", "1", retryAt}
end
if rememberMs > 0 and msg.route == "pool" and msg.status == "claimed" and status ~= "failed" then
  local who = device .. ":" .. msg.to
  rcall("HSET", KEYS[6], who, msg.account .. "|" .. now)
  rcall("ZADD", KEYS[7], now, who)
  local old = rcall("ZRANGEBYSCORE", KEYS[7], "-inf", now - rememberMs, "LIMIT", 0, 10)
  if #old > 0 then
    rcall("HDEL", KEYS[6], unpack(old))
    rcall("ZREM", KEYS[7], unpack(old))
  end
end
if status == "sent" and sentFromSlot > 0 then
  msg.sim_slot = sentFromSlot
end
if status == "sent" and msg.encrypted and sentSegments and sentSegments > 0 then
  msg.segments = sentSegments
end
change(batch, eventsKey, msg, status, device, now, err)
bulkRun(bulk)
flush(batch, messagesKey, countersKey)
if not retryable then
  noteReport(KEYS[17], device, status, err, now, tonumber(ARGV[13]), tonumber(ARGV[14]))
end
seen()
return {id, status, "1", 0}

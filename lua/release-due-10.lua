--[[
  Release the scheduled messages of one shard whose send_at has come: scheduled ->
  queued, into their device's queue or their sender's turn in the pool, each with its
  expiry, a bounded batch per call. Waiting phones are woken as for a new message
  (includes/wakeups). A device message its phone put back after a retryable failure
  (queued, held back for the retry delay) goes back to that device's queue the same
  way. A message no longer waiting (cancelled or expired meanwhile) is only dropped
  from the set.

  Input:
    KEYS[1]  scheduled sorted set           {S}:scheduled
    KEYS[2]  messages hash                  {S}:messages
    KEYS[3]  counters hash                  {S}:counters
    KEYS[4]  events stream                  {S}:events
    KEYS[5]  expiry sorted set              {S}:expiry
    KEYS[6]  device queue                   {S}:queue
    KEYS[7]  pool sorted set                {S}:pool
    KEYS[8]  pool state hash                {S}:pool:state
    KEYS[9]  waiting set                    {S}:waiting
    KEYS[10] pool's high-priority set       {S}:pool:high

    ARGV[1]  now (ms)
    ARGV[2]  most messages to release in this call
    ARGV[3]  the command that publishes wake-ups: PUBLISH or SPUBLISH
    ARGV[4]  the shard's wake channel       {S}:wake

  Output:
    {released, next_due}   next_due: the send_at of the earliest message still
                           scheduled here (ms), 0 when none is
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/wakeups"

local scheduledKey = KEYS[1]
local messagesKey = KEYS[2]
local eventsKey = KEYS[4]
local now = tonumber(ARGV[1])
local perCall = tonumber(ARGV[2])

local due = rcall("ZRANGEBYSCORE", scheduledKey, "-inf", now, "LIMIT", 0, perCall)
local found = loadMessages(messagesKey, due)
local bulk = newBulk()
local batch = newBatch()
local wakes = {}
local pooled, senders = {}, {}
local released = 0
for i = 1, #due do
  bulkAdd(bulk, "ZREM", scheduledKey, due[i])
  local msg = found[i]
  if msg and msg.status == "queued" and msg.route == "device" then
    bulkAdd(bulk, "ZADD", KEYS[6], 0, queueMember(msg.device, msg))
    wakeDevice(wakes, KEYS[9], msg.device, now)
    released = released + 1
  elseif msg and msg.status == "scheduled" then
    if msg.route == "device" then
      bulkAdd(bulk, "ZADD", KEYS[6], 0, queueMember(msg.device, msg))
      wakeDevice(wakes, KEYS[9], msg.device, now)
    else
      if not pooled[msg.account] then
        pooled[msg.account] = {}
        senders[#senders + 1] = msg.account
      end
      table.insert(pooled[msg.account], msg)
    end
    bulkAdd(bulk, "ZADD", KEYS[5], msg.expires, msg.id)
    change(batch, eventsKey, msg, "queued", msg.device, now, nil)
    released = released + 1
  end
end
local inPool = 0
for i = 1, #senders do
  poolPush(bulk, {key = KEYS[7], state = KEYS[8], high = KEYS[10]}, senders[i], pooled[senders[i]])
  inPool = inPool + #pooled[senders[i]]
end
bulkRun(bulk)
flush(batch, messagesKey, KEYS[3])
wakePool(wakes, KEYS[9], now, inPool)
publishWakes(wakes, ARGV[3], ARGV[4])

local nextDue = rcall("ZRANGE", scheduledKey, 0, 0, "WITHSCORES")
return {released, tonumber(nextDue[2] or "0")}

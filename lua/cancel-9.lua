--[[
  The sender cancels a message that no phone holds yet: queued or scheduled ->
  cancelled.
  Cancelling a cancelled message is a no-op.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  device queue                   {S}:queue
    KEYS[4]  expiry sorted set              {S}:expiry
    KEYS[5]  pool sorted set                {S}:pool
    KEYS[6]  pool state hash                {S}:pool:state
    KEYS[7]  events stream                  {S}:events
    KEYS[8]  scheduled sorted set           {S}:scheduled
    KEYS[9]  pool's high-priority set       {S}:pool:high

    ARGV[1]  account id (the sender; another account's message is not found)
    ARGV[2]  message id
    ARGV[3]  now (ms)

  Output:
    {id, "cancelled", changed}   changed is "1" for a move, "0" for a repeat

  Errors:
    MESSAGE_NOT_FOUND              no such message of this account
    INVALID_TRANSITION <from> cancelled   a phone already holds it, or it is final
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"

local messagesKey = KEYS[1]
local countersKey = KEYS[2]
local queueKey = KEYS[3]
local expiryKey = KEYS[4]
local poolKey = KEYS[5]
local poolStateKey = KEYS[6]
local eventsKey = KEYS[7]

local account = ARGV[1]
local id = ARGV[2]
local now = tonumber(ARGV[3])

local msg = loadMessage(messagesKey, id)
if not msg or msg.account ~= account then
  return redis.error_reply("MESSAGE_NOT_FOUND " .. id)
end
if msg.status == "cancelled" then
  return {id, "cancelled", "0"}
end
if msg.status ~= "queued" and msg.status ~= "scheduled" then
  return redis.error_reply("INVALID_TRANSITION " .. msg.status .. " cancelled")
end
rcall("ZREM", KEYS[8], id)  -- scheduled, or a device message held back for a retry
if msg.status == "scheduled" then
  -- neither queued nor pooled yet
elseif msg.route == "device" then
  rcall("ZREM", queueKey, queueMember(msg.device, msg))
else
  poolRemove({key = poolKey, state = poolStateKey, high = KEYS[9]}, msg)
end
rcall("ZREM", expiryKey, id)
local batch = newBatch()
change(batch, eventsKey, msg, "cancelled", msg.device, now, nil)
flush(batch, messagesKey, countersKey)
return {id, "cancelled", "1"}

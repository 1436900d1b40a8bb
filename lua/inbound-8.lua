--[[
  Store an SMS a phone received, once: in the history of the account it belongs to, with
  its counters and a "received" event (which the snapshotter stores and the webhook
  dispatcher delivers as message.received). An opt-out word (STOP, ...) as the whole
  text puts the sender on the account's suppression list; an opt-in word (START, ...)
  takes it off, in the same call. The sender's thread in the account's inbox is made, or
  moved to this SMS (includes/threads.lua).

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  counters hash                  {S}:counters
    KEYS[3]  events stream                  {S}:events
    KEYS[4]  the account's message index    {S}:sent:<account>
    KEYS[5]  its suppression list's order   {S}:suppressed:<account>
    KEYS[6]  its suppression list           {S}:suppression:<account>
    KEYS[7]  its inbox's threads            {S}:threads:<account>
    KEYS[8]  each thread's newest id        {S}:threads:<account>:newest

    ARGV[1]  message id (given once per received SMS: a retry names the same)
    ARGV[2]  account id ("" for none: a platform pool phone's SMS nobody claims)
    ARGV[3]  device id
    ARGV[4]  from: the sender's number (E.164) or name
    ARGV[5]  to: the phone's own number, "" when unknown
    ARGV[6]  text
    ARGV[7]  segments
    ARGV[8]  now (ms)
    ARGV[9]  received_at (ms, the phone's clock)
    ARGV[10] SIM slot, "" when not given
    ARGV[11] "stop", "start" or "": what the text asks of the suppression list
    ARGV[12] the suppression entry's JSON (reason, created_ms), for "stop"

  Output:
    {"new" | "duplicate", suppression}: duplicate when the id is stored already
    (nothing changes); suppression is "added", "removed" or "" (no change)
]]
local rcall = redis.call
--- @include "includes/messages"
--- @include "includes/threads"

local messagesKey = KEYS[1]
local countersKey = KEYS[2]
local eventsKey = KEYS[3]
local indexKey = KEYS[4]
local suppressedKey = KEYS[5]
local suppressionKey = KEYS[6]
local threadsKey = KEYS[7]
local newestKey = KEYS[8]

local id = ARGV[1]
local account = ARGV[2]
local device = ARGV[3]
local from = ARGV[4]
local now = tonumber(ARGV[8])

if rcall("HEXISTS", messagesKey, id) == 1 then
  return {"duplicate", ""}
end

local msg = {
  id = id, account = account, to = ARGV[5], body = ARGV[6], segments = tonumber(ARGV[7]),
  route = "inbound", device = device, status = "received", created = now, expires = 0,
  leases = 0, lease_until = 0, updated = now, error = "", direction = "inbound",
  from = from, received_at = tonumber(ARGV[9]), sim_slot = tonumber(ARGV[10]) or cjson.null,
  timeline = {{"received", now, device, ""}}
}
rcall("HSET", messagesKey, id, cjson.encode(msg))
if account ~= "" then
  rcall("HINCRBY", countersKey, "a:" .. account .. ":received", 1)
  rcall("ZADD", indexKey, 0, id)
  moveThread(threadsKey, newestKey, from, id, rcall("HGET", newestKey, from))
end
rcall("HINCRBY", countersKey, "d:" .. device .. ":received", 1)
addEvent(eventsKey, msg, now)

local suppression = ""
if account ~= "" and from:sub(1, 1) == "+" then
  if ARGV[11] == "stop" and rcall("HSETNX", suppressionKey, from, ARGV[12]) == 1 then
    rcall("ZADD", suppressedKey, 0, from)
    suppression = "added"
  elseif ARGV[11] == "start" and rcall("HDEL", suppressionKey, from) == 1 then
    rcall("ZREM", suppressedKey, from)
    suppression = "removed"
  end
end
return {"new", suppression}

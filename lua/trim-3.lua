--[[
  Remove one sender's finished messages from Redis once the history store holds them
  and their hot retention window has passed. A message is removed only if its record
  is still at the version that was stored (the length of its timeline): a message that
  changed since (sent -> delivered) keeps its record until that change is stored too.
  Counters are not touched: stats count every message, trimmed or not.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  trim sorted set                {S}:trim
    KEYS[3]  the sender's sent index        {S}:sent:<account>

    ARGV[1]  account id (the sender)
    ARGV[2]  cutoff (ms): only messages last changed at or before it go
    ARGV[3..] message id, version pairs (at most a few hundred per call)

  Output:
    the number of messages removed

  Errors:
    none
]]
local rcall = redis.call
--- @include "includes/messages"

local messagesKey = KEYS[1]
local trimKey = KEYS[2]
local sentKey = KEYS[3]

local account = ARGV[1]
local cutoff = tonumber(ARGV[2])

local finished = {sent = true, delivered = true, failed = true, expired = true, cancelled = true}
local ids, versions, members = {}, {}, {}
for i = 3, #ARGV - 1, 2 do
  ids[#ids + 1] = ARGV[i]
  versions[#versions + 1] = tonumber(ARGV[i + 1])
  members[#members + 1] = account .. ":" .. ARGV[i] .. ":" .. ARGV[i + 1]
end
if #ids == 0 then
  return 0
end

local found = loadMessages(messagesKey, ids)
local gone = {}
for i = 1, #ids do
  local msg = found[i]
  if msg and msg.account == account and finished[msg.status] and #(msg.timeline or {}) == versions[i]
      and msg.updated <= cutoff then
    gone[#gone + 1] = ids[i]
  end
end
if #gone > 0 then
  rcall("HDEL", messagesKey, unpack(gone))
  rcall("ZREM", sentKey, unpack(gone))
end
rcall("ZREM", trimKey, unpack(members))
return #gone

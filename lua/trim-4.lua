--[[
  Remove one sender's finished messages from Redis once the history store holds them
  and their hot retention window has passed. A message is removed only if its record
  is still at the version that was stored (the length of its timeline): a message that
  changed since (sent -> delivered) keeps its record until that change is stored too.
  Counters are not touched: stats count every message, trimmed or not.

  Only the background process holding the shard's lease, with the fencing token it was
  given, trims: one whose lease lapsed (a long pause) while another took the shard is
  refused here, in the same call as the deletes, so no check can go stale before them.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  trim sorted set                {S}:trim
    KEYS[3]  the sender's sent index        {S}:sent:<account>
    KEYS[4]  the shard's background lease   {S}:background

    ARGV[1]  the lease as its holder has it: "<holder>|<fencing token>"
    ARGV[2]  account id (the sender)
    ARGV[3]  cutoff (ms): only messages last changed at or before it go
    ARGV[4..] message id, version pairs (at most a few hundred per call)

  Output:
    the number of messages removed; -1 when the lease is not (or no longer) ARGV[1]:
    nothing is removed

  Errors:
    none
]]
local rcall = redis.call
--- @include "includes/messages"

local messagesKey = KEYS[1]
local trimKey = KEYS[2]
local sentKey = KEYS[3]
local leaseKey = KEYS[4]

local account = ARGV[2]
local cutoff = tonumber(ARGV[3])

if rcall("GET", leaseKey) ~= ARGV[1] then
  return -1
end

local finished = {sent = true, delivered = true, failed = true, expired = true, cancelled = true, received = true}
local ids, versions, members = {}, {}, {}
for i = 4, #ARGV - 1, 2 do
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

--[[
  What becomes of a webhook lane's first event after a POST, or of a lane whose endpoint
  is gone or disabled. Only the background process holding the account shard's lease
  writes here, with the fencing token it was given, checked in the same call: one whose
  lease lapsed (a long pause) while another process took the shard is refused, so it
  can neither drop an event the new holder has not delivered nor set a retry time over
  the new holder's.

  Input:
    KEYS[1]  the account shard's background lease   {A}:background
    KEYS[2]  the endpoint                           {A}:webhook:<ep>
    KEYS[3]  the lane                               {A}:webhook:<ep>:lane:<k>
    KEYS[4]  the endpoint's retry state             {A}:webhook:<ep>:retry
    KEYS[5]  the endpoint's delivery log            {A}:webhook:<ep>:log

    ARGV[1]  the lease as its holder has it: "<holder>|<fencing token>"
    ARGV[2]  what happened: "delivered" (the first event leaves the lane), "gave_up"
             (it leaves, failed for good), "retry" (it stays, tried again later),
             "clear" (the lane is emptied if its endpoint is gone or disabled)
    ARGV[3]  the lane number k
    ARGV[4]  now (ms)
    ARGV[5]  the event POSTed, as read from the lane: it must still be the lane's first
             ("" for clear)
    ARGV[6]  the attempt's line for the delivery log, JSON ("" for clear)
    ARGV[7]  how many lines the log keeps
    ARGV[8]  for retry: "<attempts>|<next attempt ms>" ("" otherwise)

  Output:
    1 done; 0 refused, nothing written: the lease is not ARGV[1] (another process holds
    the shard now); 2 nothing written: the lane's first event is not ARGV[5] any more
    (the lane was emptied, its endpoint disabled or deleted, since it was read).
]]
local rcall = redis.call
local leaseKey = KEYS[1]
local endpointKey = KEYS[2]
local laneKey = KEYS[3]
local retryKey = KEYS[4]
local logKey = KEYS[5]
local op = ARGV[2]
local lane = ARGV[3]
local now = ARGV[4]

if rcall("GET", leaseKey) ~= ARGV[1] then
  return 0
end

if op == "clear" then
  local ep = rcall("HMGET", endpointKey, "url", "disabled_ms")
  if not ep[1] or (ep[2] and ep[2] ~= "0" and ep[2] ~= "") then
    rcall("DEL", laneKey)
  end
  return 1
end

if rcall("LINDEX", laneKey, 0) ~= ARGV[5] then
  return 2
end
if op == "retry" then
  rcall("HSET", retryKey, lane, ARGV[8])
else
  rcall("LPOP", laneKey)
  rcall("HDEL", retryKey, lane)
  rcall("HINCRBY", endpointKey, "queued", -1)
end
rcall("LPUSH", logKey, ARGV[6])
rcall("LTRIM", logKey, 0, tonumber(ARGV[7]) - 1)
if op == "delivered" then
  rcall("HSET", endpointKey, "failing_since_ms", 0, "last_success_ms", now)
else
  local since = rcall("HGET", endpointKey, "failing_since_ms")
  if not since or since == "0" or since == "" then
    rcall("HSET", endpointKey, "failing_since_ms", now)
  end
end
return 1

--[[
  Disable a webhook endpoint that has had no successful delivery for the whole retry
  window: the reason is kept, its retry state dropped and the attempt logged. Its lanes
  are emptied afterwards, one call each (webhook-lane "clear", which empties a lane only
  while its endpoint is still disabled). Only the background process holding the
  account shard's lease, with its fencing token, may do it.

  Input:
    KEYS[1]  the account shard's background lease   {A}:background
    KEYS[2]  the endpoint                           {A}:webhook:<ep>
    KEYS[3]  the endpoint's retry state             {A}:webhook:<ep>:retry
    KEYS[4]  the endpoint's delivery log            {A}:webhook:<ep>:log

    ARGV[1]  the lease as its holder has it: "<holder>|<fencing token>"
    ARGV[2]  now (ms): when it was disabled
    ARGV[3]  the reason, for the dashboard
    ARGV[4]  the attempt's line for the delivery log, JSON
    ARGV[5]  how many lines the log keeps

  Output:
    1 disabled; 0 refused, nothing written: the lease is not ARGV[1]; 2 nothing
    written: the endpoint was deleted meanwhile.
]]
local rcall = redis.call
local endpointKey = KEYS[2]
local logKey = KEYS[4]

if rcall("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
if not rcall("HGET", endpointKey, "url") then
  return 2
end
rcall("HSET", endpointKey, "disabled_ms", ARGV[2], "disabled_reason", ARGV[3], "queued", 0)
rcall("DEL", KEYS[3])
rcall("LPUSH", logKey, ARGV[4])
rcall("LTRIM", logKey, 0, tonumber(ARGV[5]) - 1)
return 1

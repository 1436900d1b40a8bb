--[[
  Charge a pool phone's send budget, in its home shard, for the messages pool-take
  handed it from the platform pool's other shards. Adds to what is there (another
  claim of the same phone may have charged in between), so a phone goes over its
  budget by at most one claim's worth.

  Input:
    KEYS[1]  device hash                    {S}:device:<device>
    KEYS[2]  device send window             {S}:device:<device>:window

    ARGV[1]  now (ms)
    ARGV[2]  segments to charge (> 0)
    ARGV[3]  id of the last message handed out (names the window entry)

  Output:
    1; 0 when the device is gone (removed meanwhile): nothing charged
]]
local rcall = redis.call
local deviceKey = KEYS[1]
local now = tonumber(ARGV[1])
local segments = tonumber(ARGV[2])

if rcall("HEXISTS", deviceKey, "per_minute") == 0 then
  return 0
end
local day = rcall("HGET", deviceKey, "day")
local today = math.floor(now / 86400000)
if tonumber(day) == today then
  rcall("HINCRBY", deviceKey, "day_used", segments)
else
  rcall("HSET", deviceKey, "day", today, "day_used", segments)
end
rcall("HINCRBY", deviceKey, "window_used", segments)
rcall("ZADD", KEYS[2], now, now .. ":" .. ARGV[3] .. ":" .. segments)
return 1

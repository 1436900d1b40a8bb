--[[
  GCRA rate limit check (generic cell rate algorithm): a bucket of `burst` requests
  that refills one request every `interval` ms. A request costing more than the whole
  burst is allowed when the bucket is full, and then empties it for that long.

  Input:
    KEYS[1]  limiter key                    {S}:rate:<name>

    ARGV[1]  now (ms)
    ARGV[2]  emission interval (ms per request)
    ARGV[3]  burst (requests)
    ARGV[4]  cost of this request (requests)

  Output:
    {allowed, remaining, retry_after_ms, reset_ms}
      allowed        1 or 0
      remaining      requests that could still be made now
      retry_after_ms 0 when allowed, else when this request would be allowed
      reset_ms       when the bucket is full again
]]
local rcall = redis.call

local limiterKey = KEYS[1]

local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])

local tat = tonumber(rcall("GET", limiterKey) or "0")
if tat < now then
  tat = now
end
local tolerance = interval * burst
local newTat = tat + cost * interval
local allowAt = newTat - tolerance

if now < allowAt and not (cost > burst and tat == now) then
  local remaining = math.floor((tolerance - (tat - now)) / interval)
  if remaining < 0 then
    remaining = 0
  end
  local retryAfter = allowAt - now
  if cost > burst then
    retryAfter = tat - now
  end
  return {0, remaining, math.ceil(retryAfter), math.ceil(tat - now)}
end

rcall("SET", limiterKey, newTat, "PX", math.ceil(newTat - now))
local remaining = math.floor((tolerance - (newTat - now)) / interval)
if remaining < 0 then
  remaining = 0
end
return {1, remaining, 0, math.ceil(newTat - now)}

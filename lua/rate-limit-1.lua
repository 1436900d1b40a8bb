--[[
  GCRA rate limit check for one limiter (see includes/gcra.lua): a bucket of `burst`
  requests that refills one request every `interval` ms.

  Input:
    KEYS[1]  limiter key                    {rate:<name>:<client>} or {S}:rate:<name>

    ARGV[1]  now (ms)
    ARGV[2]  emission interval (ms per request)
    ARGV[3]  burst (requests)
    ARGV[4]  cost of this request (requests)

  Output:
    {allowed, remaining, retry_after_ms, reset_ms}
      allowed        1 or 0 (a refused request changes nothing)
      remaining      requests that could still be made now
      retry_after_ms 0 when allowed, else when this request would be allowed
      reset_ms       when the bucket is full again
]]
local rcall = redis.call
--- @include "includes/gcra"

local now = tonumber(ARGV[1])
local d = gcraCheck(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if d.allowed then
  gcraCommit(d, now)
  return {1, d.remaining, 0, d.reset}
end
return {0, d.remaining, d.retryAfter, d.reset}

-- GCRA (generic cell rate algorithm): a bucket of `burst` requests that refills one
-- request every `interval` ms, kept as one number per limiter: the theoretical arrival
-- time (TAT), in a string key that expires when the bucket is full again.
-- A request costing more than the whole burst is allowed when the bucket is full, and
-- then empties it for that long (a batch of 1,000 at 20/s waits for a full bucket).
--
-- gcraCheck(key, now, interval, burst, cost) -> decision, and changes nothing:
--   decision.allowed     true or false
--   decision.remaining   requests that could still be made now (after this one if allowed)
--   decision.retryAfter  ms until this request would be allowed (0 when allowed)
--   decision.reset       ms until the bucket is full again
-- gcraCommit(decision, now) records an allowed request (the decision knows its key).
-- A cost of 0 peeks at the limiter.

local function gcraCheck(key, now, interval, burst, cost)
  local tat = tonumber(rcall("GET", key) or "0")
  if tat < now then
    tat = now
  end
  local tolerance = interval * burst
  local newTat = tat + cost * interval
  local allowAt = newTat - tolerance
  local d = {key = key, newTat = newTat, burst = burst}
  if cost > 0 and now < allowAt and not (cost > burst and tat == now) then
    d.allowed = false
    d.remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval))
    if cost > burst then
      d.retryAfter = math.ceil(tat - now)
    else
      d.retryAfter = math.ceil(allowAt - now)
    end
    d.reset = math.ceil(tat - now)
    return d
  end
  d.allowed = true
  d.remaining = math.max(0, math.floor((tolerance - (newTat - now)) / interval))
  d.retryAfter = 0
  d.reset = math.ceil(newTat - now)
  return d
end

local function gcraCommit(d, now)
  if d.newTat > now then
    rcall("SET", d.key, string.format("%.3f", d.newTat), "PX", math.ceil(d.newTat - now))
  end
end

-- The error reply of a refused request:
-- "RATE_LIMITED <retry after ms> <remaining> <reset ms> <burst>".
local function gcraRefusal(d)
  return redis.error_reply("RATE_LIMITED " .. d.retryAfter .. " " .. d.remaining .. " " .. d.reset
    .. " " .. d.burst)
end

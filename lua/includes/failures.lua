--[[
  Phones that fail everything: per shard, a hash device -> "<failed reports in a
  row>|<pool claims skip it until (ms)>|<why>". A report that is failed (not retryable)
  adds one; at the limit the phone's pool claims in this shard skip it for the pause
  and the count starts again; a sent or delivered report removes the entry (the phone
  works: no pause). Retryable failures (no service) count neither way. Its own queue
  is never skipped: those messages can go to no other phone.
]]
local function failureState(failuresKey, device)
  local raw = rcall("HGET", failuresKey, device)
  if not raw then
    return 0, 0, ""
  end
  local streak, untilMs, why = string.match(raw, "^(%d+)|(%d+)|(.*)$")
  return tonumber(streak), tonumber(untilMs), why
end

local function poolSkips(failuresKey, device, now)
  local _, untilMs = failureState(failuresKey, device)
  return untilMs > now
end

-- A report moved a message of `device` to `status`.
local function noteReport(failuresKey, device, status, err, now, limit, pauseMs)
  if status ~= "failed" then
    rcall("HDEL", failuresKey, device)
    return
  end
  local streak, untilMs, why = failureState(failuresKey, device)
  streak = streak + 1
  if streak >= limit then
    untilMs = now + pauseMs
    why = streak .. " failed reports in a row, the last: " .. err
    streak = 0
  end
  rcall("HSET", failuresKey, device, streak .. "|" .. untilMs .. "|" .. why)
end

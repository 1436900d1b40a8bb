--[[
  Wake-ups for long-polling phones (broker/wakeups.py holds the other end). A phone
  whose waiting claim found nothing is listed in its shard's waiting set,
  {S}:waiting (device id -> the end of its wait, ms); a pool phone of a sharded
  platform pool is listed in every pool shard it visited. A script that makes work
  claimable takes the phones it needs off that set, collects their ids in a wake
  list, and publishes the list once, space-separated, on the shard's wake channel
  {S}:wake: one phone for a message queued for it, one waiting phone per message put
  in the pool (the longest waiting first), none when nobody waits. The caller names
  the channel and the command (PUBLISH on one Redis, SPUBLISH on a Cluster, where
  the channel's hash tag keeps it in the script's slot).

  A wake that finds no phone waiting any more is lost, never a message: the claim
  is still the only way to take work, and a waiting phone claims again at the end
  of its wait.
]]

-- A claim's part: "-" is a claim outside a wait (the set is left alone); "0" ends
-- a wait; a time (ms) lists the device as waiting until then when the claim handed
-- it nothing, and takes it off when it handed it something.
-- Waits that ended without their last claim (the phone hung up, its server stopped)
-- are dropped here once past their end, so the set holds only live ones.
local function noteWaiting(waitingKey, device, wait, handed, now)
  if wait == "-" then
    return
  end
  local untilMs = tonumber(wait)
  if untilMs > 0 and handed == 0 then
    rcall("ZADD", waitingKey, untilMs, device)
  else
    rcall("ZREM", waitingKey, device)
  end
  rcall("ZREMRANGEBYSCORE", waitingKey, "-inf", now)
end

-- The device, when it is waiting: a message was queued for it.
local function wakeDevice(list, waitingKey, device, now)
  local untilMs = rcall("ZSCORE", waitingKey, device)
  if untilMs then
    rcall("ZREM", waitingKey, device)
    if tonumber(untilMs) > now then
      list[#list + 1] = device
    end
  end
end

-- Up to n waiting devices, the longest waiting first: n messages went into the pool.
local function wakePool(list, waitingKey, now, n)
  if n <= 0 then
    return
  end
  rcall("ZREMRANGEBYSCORE", waitingKey, "-inf", now)
  local popped = rcall("ZPOPMIN", waitingKey, n)
  for i = 1, #popped, 2 do
    list[#list + 1] = popped[i]
  end
end

local function publishWakes(list, command, channel)
  if #list > 0 then
    rcall(command, channel, table.concat(list, " "))
  end
end

--[[
  The steps of a claim that the claim script (a device's own shard) and pool-take
  (another shard of a sharded platform pool) share: the send budget, the device's own
  leases that ran out, and the pool in fair order. Needs includes/bulk, messages, pool
  and leases.

  A claim in progress, `c` (newClaim):
    device, now, limit, leaseMs, maxLeases
    minuteUsed, perMinute, dayUsed, perDay   the budget in segments, charged as it goes
    charged                                   segments this call charged
    claimed                                   {id, to, body, segments, sim slot (0: any)}
                                              handed out, in order
    bulk, batch                               the writes, run by the script at its end
    messagesKey, eventsKey, expiryKey, leasedKey, leaseChecksKey
]]
local function newClaim(device, now, limit, leaseMs, maxLeases, keys)
  return {
    device = device, now = now, limit = limit, leaseMs = leaseMs, maxLeases = maxLeases,
    minuteUsed = 0, perMinute = 0, dayUsed = 0, perDay = 0, charged = 0,
    claimed = {}, bulk = newBulk(), batch = newBatch(),
    messagesKey = keys.messages, eventsKey = keys.events, expiryKey = keys.expiry,
    leasedKey = keys.leased, leaseChecksKey = keys.leaseChecks
  }
end

-- Whether a message of `segments` fits the budget. A message longer than a whole
-- budget may go out when that budget is wholly unused.
local function fits(c, segments)
  local minuteOk = c.minuteUsed + segments <= c.perMinute or (c.minuteUsed == 0 and segments > c.perMinute)
  local dayOk = c.dayUsed + segments <= c.perDay or (c.dayUsed == 0 and segments > c.perDay)
  return minuteOk and dayOk
end

local function hand(c, msg)
  c.claimed[#c.claimed + 1] = {msg.id, msg.to, msg.body, tostring(msg.segments), tostring(tonumber(msg.sim_slot) or 0)}
end

local function claimOne(c, msg)
  bulkAdd(c.bulk, "ZREM", c.expiryKey, msg.id)
  takeLease(c.bulk, c.leasedKey, c.leaseChecksKey, msg, c.device, c.now, c.leaseMs)
  c.minuteUsed = c.minuteUsed + msg.segments
  c.dayUsed = c.dayUsed + msg.segments
  c.charged = c.charged + msg.segments
  change(c.batch, c.eventsKey, msg, "claimed", c.device, c.now, nil)
  hand(c, msg)
end

local function expireOne(c, msg)
  bulkAdd(c.bulk, "ZREM", c.expiryKey, msg.id)
  change(c.batch, c.eventsKey, msg, "expired", msg.device, c.now, nil)
end

-- The device's own claimed messages whose lease ran out, handed to it again (it
-- de-duplicates by id); one that had its last lease, or whose TTL passed, fails with
-- device_lost instead. Redelivery does not charge the budget again.
local function redeliver(c)
  local expiredLeases = rcall("ZRANGEBYLEX", c.leasedKey, "[" .. c.device .. ":",
    "(" .. c.device .. ":" .. string.format("%015d", c.now + 1), "LIMIT", 0, c.limit)
  local ids = {}
  for i = 1, #expiredLeases do
    ids[i] = string.match(expiredLeases[i], ":([^:]+)$")
  end
  local held = loadMessages(c.messagesKey, ids)
  for i = 1, #expiredLeases do
    local msg = held[i]
    if not msg or msg.status ~= "claimed" then
      bulkAdd(c.bulk, "ZREM", c.leasedKey, expiredLeases[i])
    elseif msg.leases >= c.maxLeases or c.now >= msg.expires then
      dropLease(c.bulk, c.leasedKey, c.leaseChecksKey, msg)
      change(c.batch, c.eventsKey, msg, "failed", c.device, c.now, "device_lost")
    else
      renewLease(c.bulk, c.leasedKey, c.leaseChecksKey, msg, c.now, c.leaseMs)
      keep(c.batch, msg)
      hand(c, msg)
    end
  end
end

-- Pool messages in fair order (lowest virtual finish time first) until the claim is
-- full. Returns true when it stopped at a message that does not fit the budget.
local function claimFromPool(c, poolKey, poolStateKey)
  if #c.claimed >= c.limit then
    return false
  end
  local pooled = rcall("ZRANGE", poolKey, 0, c.limit - #c.claimed - 1, "WITHSCORES")
  local ids = {}
  for i = 1, #pooled, 2 do
    ids[#ids + 1] = pooled[i]
  end
  local found = loadMessages(c.messagesKey, ids)
  local taken, lastScore, budgetFull = {}, nil, false
  for i = 1, #ids do
    local msg = found[i]
    if not msg then
      bulkAdd(c.bulk, "ZREM", poolKey, ids[i])
    elseif c.now >= msg.expires then
      poolRemove(poolKey, poolStateKey, msg.account, msg.id)
      expireOne(c, msg)
    elseif not fits(c, msg.segments) then
      budgetFull = true
      break
    else
      taken[#taken + 1] = {msg.id, msg.account}
      lastScore = pooled[2 * i]
      claimOne(c, msg)
    end
  end
  if #taken > 0 then
    poolTaken(c.bulk, poolKey, poolStateKey, taken, lastScore)
  end
  return budgetFull
end

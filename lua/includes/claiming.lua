--[[
  The steps of a claim that the claim script (a device's own shard) and pool-take
  (another shard of a sharded platform pool) share: the send budget, the device's own
  leases that ran out, and the pool in fair order. Needs includes/bulk, messages, pool
  and leases.

  A claim in progress, `c` (newClaim):
    device, now, limit, leaseMs, maxLeases
    minuteUsed, perMinute, dayUsed, perDay   the budget in segments, charged as it goes
    charged                                   segments this call charged
    claimed                                   {id, to, body, segments, sim slot (0: any), encrypted (1 or 0)}
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

-- The device's send window (broker/send_windows.py): whether `now` is inside one of the
-- UTC intervals of `spec` ("<start>-<end>,..."; none: no window, always open), and
-- whether the intervals end within `refreshMs` (the caller writes the next ones).
local function sendWindow(spec, now, refreshMs)
  if not spec or spec == "" then
    return true, false
  end
  local open, last = false, 0
  for s, e in string.gmatch(spec, "(%d+)-(%d+)") do
    s, e = tonumber(s), tonumber(e)
    if s <= now and now < e then
      open = true
    end
    last = e
  end
  return open, last - now < refreshMs
end

-- Whether a message of `segments` fits the budget. A message longer than a whole
-- budget may go out when that budget is wholly unused.
local function fits(c, segments)
  local minuteOk = c.minuteUsed + segments <= c.perMinute or (c.minuteUsed == 0 and segments > c.perMinute)
  local dayOk = c.dayUsed + segments <= c.perDay or (c.dayUsed == 0 and segments > c.perDay)
  return minuteOk and dayOk
end

local function hand(c, msg)
  local encrypted = "0"
  if msg.encrypted then
    encrypted = "1"
  end
  c.claimed[#c.claimed + 1] = {
    msg.id, msg.to, msg.body, tostring(msg.segments), tostring(tonumber(msg.sim_slot) or 0), encrypted
  }
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

-- The oldest high-priority message of `account` in the pool that this claim has not
-- handed out or expired yet (`done`), with its score; an expired one met on the way
-- expires. `highs` caches each sender's high ids for the claim.
local function nextHigh(c, pool, account, done, highs)
  local h = highs[account]
  if not h then
    local members = rcall("ZRANGEBYLEX", pool.high, "[" .. account .. ":", "(" .. account .. ";",
      "LIMIT", 0, c.limit)
    h = {ids = {}, at = 1}
    for i = 1, #members do
      h.ids[i] = string.sub(members[i], #account + 2)
    end
    highs[account] = h
  end
  while h.at <= #h.ids do
    local id = h.ids[h.at]
    h.at = h.at + 1
    if not done[id] then
      local msg = loadMessage(c.messagesKey, id)
      local score = rcall("ZSCORE", pool.key, id)
      if not msg or msg.status ~= "queued" or not score then
        bulkAdd(c.bulk, "ZREM", pool.high, highMember(account, id))
      elseif c.now >= msg.expires then
        poolRemove(pool, msg)
        expireOne(c, msg)
        done[id] = true
      else
        return msg, score
      end
    end
  end
  return nil, nil
end

-- Pool messages in fair order (lowest virtual finish time first) until the claim is
-- full; at a sender's turn its oldest high-priority message goes first, and the
-- message whose turn it was takes the high one's turn (see includes/pool). Returns
-- true when it stopped at a message that does not fit the budget.
local function claimFromPool(c, pool)
  if #c.claimed >= c.limit then
    return false
  end
  local pooled = rcall("ZRANGE", pool.key, 0, c.limit - #c.claimed - 1, "WITHSCORES")
  local ids = {}
  for i = 1, #pooled, 2 do
    ids[#ids + 1] = pooled[i]
  end
  local found = loadMessages(c.messagesKey, ids)
  local anyHigh = rcall("EXISTS", pool.high) == 1
  local taken, lastScore, budgetFull = {}, nil, false
  local done = {} -- id -> true: handed out or expired by this claim
  local holder = {} -- id -> the record that now holds that id's turn
  local moved, movedIds = {}, {} -- id -> its new score, for messages that gave their turn away
  local highs = {}
  for i = 1, #ids do
    local msg = holder[ids[i]]
    if msg == nil and not done[ids[i]] then
      msg = found[i]
      if not msg then
        bulkAdd(c.bulk, "ZREM", pool.key, ids[i])
      end
    end
    if msg and c.now >= msg.expires then
      poolRemove(pool, msg)
      expireOne(c, msg)
      done[msg.id] = true
    elseif msg then
      local pick, pickScore = msg, nil
      if anyHigh and msg.priority ~= "high" then
        local high, score = nextHigh(c, pool, msg.account, done, highs)
        if high then
          pick, pickScore = high, score
        end
      end
      if not fits(c, pick.segments) then
        budgetFull = true
        break
      end
      taken[#taken + 1] = pick
      done[pick.id] = true
      lastScore = pooled[2 * i]
      claimOne(c, pick)
      if pick ~= msg then
        holder[pick.id] = msg
        if not moved[msg.id] then
          movedIds[#movedIds + 1] = msg.id
        end
        moved[msg.id] = pickScore
      end
    end
  end
  if #taken > 0 then
    local stays = {}
    for i = 1, #movedIds do
      if not done[movedIds[i]] then
        stays[#stays + 1] = {movedIds[i], moved[movedIds[i]]}
      end
    end
    poolTaken(c.bulk, pool, taken, lastScore, stays)
  end
  return budgetFull
end

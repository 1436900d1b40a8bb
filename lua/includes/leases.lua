--[[
  Where a message waits and who holds it.

  Device queue: one sorted set per shard, every score 0, members "<device>:<id>", or
  "<device>:!<id>" for a high-priority message; ids are time-sortable and "!" sorts
  before every id character, so ZRANGEBYLEX over the "<device>:" prefix is that
  device's high messages, then its normal ones, each in time order.
  Leased set: one sorted set per shard, every score 0, members
  "<device>:<lease_until, 15 digits>:<id>": a device's expired leases are one
  ZRANGEBYLEX. Lease checks: sorted set of claimed ids scored by when the sweep should
  look at them next. Expiry: sorted set of queued ids scored by their TTL deadline.
]]
local function queueMember(device, msg)
  if msg.priority == "high" then
    return device .. ":!" .. msg.id
  end
  return device .. ":" .. msg.id
end

-- The message id of a device queue member.
local function queuedId(member, device)
  local id = string.sub(member, #device + 2)
  if string.sub(id, 1, 1) == "!" then
    return string.sub(id, 2)
  end
  return id
end

local function leasedMember(device, leaseUntil, id)
  return device .. ":" .. string.format("%015d", leaseUntil) .. ":" .. id
end

-- The message is no longer claimed (reported, lost, or back in the pool).
local function dropLease(bulk, leasedKey, leaseChecksKey, msg)
  bulkAdd(bulk, "ZREM", leasedKey, leasedMember(msg.device, msg.lease_until, msg.id))
  bulkAdd(bulk, "ZREM", leaseChecksKey, msg.id)
end

-- A new lease for `device`; a message it held already must have dropped its old
-- leased-set member first (renewLease).
local function takeLease(bulk, leasedKey, leaseChecksKey, msg, device, now, leaseMs)
  msg.leases = msg.leases + 1
  msg.lease_until = now + leaseMs
  bulkAdd(bulk, "ZADD", leasedKey, 0, leasedMember(device, msg.lease_until, msg.id))
  bulkAdd(bulk, "ZADD", leaseChecksKey, msg.lease_until, msg.id)
end

local function renewLease(bulk, leasedKey, leaseChecksKey, msg, now, leaseMs)
  bulkAdd(bulk, "ZREM", leasedKey, leasedMember(msg.device, msg.lease_until, msg.id))
  takeLease(bulk, leasedKey, leaseChecksKey, msg, msg.device, now, leaseMs)
end

local function isOnline(lastSeenKey, device, now, presenceTtl)
  local seen = rcall("ZSCORE", lastSeenKey, device)
  return seen ~= false and seen ~= nil and tonumber(seen) + presenceTtl > now
end

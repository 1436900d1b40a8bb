--[[
  Where a message waits and who holds it.

  Device queue: one sorted set per shard, every score 0, members "<device>:<id>"; ids
  are time-sortable, so ZRANGEBYLEX over the "<device>:" prefix is that device's FIFO.
  Leased set: one sorted set per shard, every score 0, members
  "<device>:<lease_until, 15 digits>:<id>": a device's expired leases are one
  ZRANGEBYLEX. Lease checks: sorted set of claimed ids scored by when the sweep should
  look at them next. Expiry: sorted set of queued ids scored by their TTL deadline.
]]
local function queueMember(device, id)
  return device .. ":" .. id
end

local function leasedMember(device, leaseUntil, id)
  return device .. ":" .. string.format("%015d", leaseUntil) .. ":" .. id
end

local function dropLease(leasedKey, leaseChecksKey, msg)
  rcall("ZREM", leasedKey, leasedMember(msg.device, msg.lease_until, msg.id))
  rcall("ZREM", leaseChecksKey, msg.id)
end

local function takeLease(leasedKey, leaseChecksKey, msg, device, now, leaseMs)
  msg.leases = msg.leases + 1
  msg.lease_until = now + leaseMs
  rcall("ZADD", leasedKey, 0, leasedMember(device, msg.lease_until, msg.id))
  rcall("ZADD", leaseChecksKey, msg.lease_until, msg.id)
end

local function isOnline(lastSeenKey, device, now, presenceTtl)
  local seen = rcall("ZSCORE", lastSeenKey, device)
  return seen ~= false and seen ~= nil and tonumber(seen) + presenceTtl > now
end

--[[
  Message records and status changes.

  A message is a JSON object stored in the shard's messages hash (field = id):
    id, account, to, body, segments, route ("device" | "pool"), device (the device
    that holds it, or the target device while queued; "" for a queued pool message),
    status, created, expires, leases, lease_until, updated, error.

  setStatus moves the per-account and per-device counters (fields "a:<account>:<status>"
  and "d:<device>:<status>" of the counters hash), saves the record and appends one
  event to the shard's stream. Every status change goes through it.
]]
local function loadMessage(messagesKey, id)
  local raw = rcall("HGET", messagesKey, id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function saveMessage(messagesKey, msg)
  rcall("HSET", messagesKey, msg.id, cjson.encode(msg))
end

local function countStatus(countersKey, msg, delta)
  rcall("HINCRBY", countersKey, "a:" .. msg.account .. ":" .. msg.status, delta)
  if msg.device ~= "" then
    rcall("HINCRBY", countersKey, "d:" .. msg.device .. ":" .. msg.status, delta)
  end
end

local function addEvent(eventsKey, msg, now)
  rcall("XADD", eventsKey, "*", "id", msg.id, "account", msg.account, "status", msg.status,
    "device", msg.device, "at", tostring(now), "error", msg.error)
end

local function setStatus(messagesKey, countersKey, eventsKey, msg, status, device, now, err)
  countStatus(countersKey, msg, -1)
  msg.status = status
  msg.device = device
  msg.updated = now
  if err then
    msg.error = err
  end
  countStatus(countersKey, msg, 1)
  saveMessage(messagesKey, msg)
  addEvent(eventsKey, msg, now)
end

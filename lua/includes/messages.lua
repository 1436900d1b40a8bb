--[[
  Message records and status changes.

  A message is a JSON object in the shard's messages hash (field = id):
    id, account, to, body, segments, route ("device" | "pool"), device (the device
    that holds it, or the target device while queued; "" for a queued pool message),
    status, created, expires, leases, lease_until, updated, error, the optional send_at,
    sim_slot, priority ("high" only) and encrypted (true only: the body is an end-to-end
    envelope), and timeline: one
    [status, at, device, error] entry per status change, oldest first; "campaign", the
    campaign it was queued for, when it was.

  A script gathers its status changes in a batch (newBatch, change), then writes them
  with flush: the counters hash ("a:<account>:<status>", "a:<account>:total",
  "d:<device>:<status>", and "c:<campaign>:<status>", "c:<campaign>:total" for a
  campaign's messages) moves once per distinct field, all records are saved in one
  HSET, and each change appends one event to the shard's stream.
]]
local function loadMessages(messagesKey, ids)
  local found = {}
  if #ids == 0 then
    return found
  end
  local raw = rcall("HMGET", messagesKey, unpack(ids))
  for i = 1, #ids do
    if raw[i] then
      found[i] = cjson.decode(raw[i])
    else
      found[i] = false
    end
  end
  return found
end

local function loadMessage(messagesKey, id)
  return loadMessages(messagesKey, {id})[1]
end

local function newBatch()
  return {counts = {}, fields = {}, saves = {}}
end

local function count(batch, field, delta)
  local current = batch.counts[field]
  if current == nil then
    batch.fields[#batch.fields + 1] = field
    current = 0
  end
  batch.counts[field] = current + delta
end

local function countStatus(batch, msg, delta)
  count(batch, "a:" .. msg.account .. ":" .. msg.status, delta)
  if msg.device ~= "" then
    count(batch, "d:" .. msg.device .. ":" .. msg.status, delta)
  end
  if msg.campaign and msg.campaign ~= "" then
    count(batch, "c:" .. msg.campaign .. ":" .. msg.status, delta)
  end
end

-- Keep a record to save, without a status change (a redelivery's new lease).
local function keep(batch, msg)
  batch.saves[#batch.saves + 1] = msg
end

local function addEvent(eventsKey, msg, now)
  if msg.direction == "inbound" then
    -- A received SMS's event carries who sent it and the text, for its webhook.
    rcall("XADD", eventsKey, "*", "id", msg.id, "account", msg.account, "status", msg.status,
      "device", msg.device, "at", now, "error", msg.error, "from", msg.from, "body", msg.body)
    return
  end
  rcall("XADD", eventsKey, "*", "id", msg.id, "account", msg.account, "status", msg.status,
    "device", msg.device, "at", now, "error", msg.error)
end

-- A new message, already queued: counted, saved and announced at flush.
local function created(batch, eventsKey, msg)
  count(batch, "a:" .. msg.account .. ":total", 1)
  if msg.campaign and msg.campaign ~= "" then
    count(batch, "c:" .. msg.campaign .. ":total", 1)
  end
  countStatus(batch, msg, 1)
  msg.timeline = {{msg.status, msg.updated, msg.device, ""}}
  keep(batch, msg)
  addEvent(eventsKey, msg, msg.updated)
end

local function change(batch, eventsKey, msg, status, device, now, err)
  countStatus(batch, msg, -1)
  msg.status = status
  msg.device = device
  msg.updated = now
  if err then
    msg.error = err
  end
  countStatus(batch, msg, 1)
  local timeline = msg.timeline or {}
  timeline[#timeline + 1] = {status, now, device, err or ""}
  msg.timeline = timeline
  keep(batch, msg)
  addEvent(eventsKey, msg, now)
end

local function flush(batch, messagesKey, countersKey)
  for i = 1, #batch.fields do
    local field = batch.fields[i]
    local delta = batch.counts[field]
    if delta ~= 0 then
      rcall("HINCRBY", countersKey, field, delta)
    end
  end
  if #batch.saves > 0 then
    local args = {}
    for i = 1, #batch.saves do
      local msg = batch.saves[i]
      args[#args + 1] = msg.id
      args[#args + 1] = cjson.encode(msg)
    end
    rcall("HSET", messagesKey, unpack(args))
  end
end

--[[
  Presence changes of a shard's devices, each announced once, for the webhook events
  device.offline and device.online:
  - a device whose presence lapsed (last seen at or before now minus the presence TTL)
    since the last call is marked offline, and a "device.offline" event, at its last
    sighting plus the TTL, goes to the shard's stream;
  - a device marked offline whose presence is live again is unmarked, and a
    "device.online" event, at its latest sighting, goes to the stream;
  - a device marked offline that was seen again and lapsed again between two calls
    (no call for a whole presence TTL) gets both, "device.online" first.
  Each lapse is looked at once: a cursor ("through") remembers up to which last-seen
  time lapses have been looked at. A call finds the same state as the last one left,
  so calling again announces nothing twice.

  Watching starts at a shard's first call, with the cursor at now minus the TTL: a
  device that was offline by then is not announced, nor is its return. A device paired
  but never seen has no presence, so no event until it was online first. Removing a
  device takes it out of last-seen and out of the offline set (remove-device): no event
  for it afterwards. Time only moves forward here: a call given an earlier now than the
  last one (a host whose clock is behind) uses the last one's.

  Only the background process holding the shard's lease, with its fencing token, may
  call it: one that paused past its lease is refused before anything is written.

  Input:
    KEYS[1]  last-seen sorted set           {S}:last-seen
    KEYS[2]  offline set                    {S}:offline
    KEYS[3]  presence watch hash            {S}:presence-watch
    KEYS[4]  events stream                  {S}:events
    KEYS[5]  the shard's background lease   {S}:background

    ARGV[1]  the lease as its holder has it: "<holder>|<fencing token>"
    ARGV[2]  now (ms)
    ARGV[3]  presence TTL (ms)
    ARGV[4]  the account the events are for: the shard's own, or the operator's for a
             platform pool shard; "" when there is none (the changes are kept, no
             event is appended)
    ARGV[5]  most lapsed devices to look at in this call

  Stream entries: event ("device.offline" | "device.online"), account, device, at (ms).

  Output:
    {offline, online, more}   changes of each kind; more is 1 when lapsed devices may
                              be left for another call
    -1                        the lease is not ARGV[1]: nothing written
]]
local rcall = redis.call

local lastSeenKey = KEYS[1]
local offlineKey = KEYS[2]
local watchKey = KEYS[3]
local eventsKey = KEYS[4]
local leaseKey = KEYS[5]

local presenceTtl = tonumber(ARGV[3])
local account = ARGV[4]
local perCall = tonumber(ARGV[5])
local CHUNK = 1000 -- members per SMISMEMBER / ZMSCORE

if rcall("GET", leaseKey) ~= ARGV[1] then
  return -1
end

local state = rcall("HMGET", watchKey, "through", "now")
local now = tonumber(ARGV[2])
if state[2] and tonumber(state[2]) > now then
  now = tonumber(state[2])
end
local lapsedBy = now - presenceTtl -- seen at or before it: offline
local through = lapsedBy
if state[1] then
  through = tonumber(state[1])
end

local offline, online = 0, 0

-- A time (ms) as Redis takes it in a range or a field: digits only.
local function cursor(ms)
  return string.format("%.0f", ms)
end

local function announce(event, device, at)
  if account ~= "" then
    rcall("XADD", eventsKey, "*", "event", event, "account", account, "device", device, "at", cursor(at))
  end
end

-- Back online: the devices marked offline whose presence is live. Whichever is smaller
-- is read, the offline set or the devices online now, so a pass costs the lesser of
-- the two, not the shard's whole fleet.
local marked = rcall("SCARD", offlineKey)
if marked > 0 then
  local back = {}
  local live = rcall("ZCOUNT", lastSeenKey, "(" .. cursor(lapsedBy), "+inf")
  if marked <= live then
    local members = rcall("SMEMBERS", offlineKey)
    for first = 1, #members, CHUNK do
      local part = {unpack(members, first, math.min(first + CHUNK - 1, #members))}
      local scores = rcall("ZMSCORE", lastSeenKey, unpack(part))
      for i = 1, #part do
        if scores[i] and tonumber(scores[i]) > lapsedBy then
          back[#back + 1] = {part[i], tonumber(scores[i])}
        end
      end
    end
  elseif live > 0 then
    local seen = rcall("ZRANGEBYSCORE", lastSeenKey, "(" .. cursor(lapsedBy), "+inf", "WITHSCORES")
    for first = 1, #seen, 2 * CHUNK do
      local part, scores = {}, {}
      for i = first, math.min(first + 2 * CHUNK - 1, #seen), 2 do
        part[#part + 1] = seen[i]
        scores[#scores + 1] = seen[i + 1]
      end
      local flags = rcall("SMISMEMBER", offlineKey, unpack(part))
      for i = 1, #part do
        if flags[i] == 1 then
          back[#back + 1] = {part[i], tonumber(scores[i])}
        end
      end
    end
  end
  for i = 1, #back do
    rcall("SREM", offlineKey, back[i][1])
    announce("device.online", back[i][1], back[i][2])
    online = online + 1
  end
end

-- Lapsed: last seen after the cursor and at or before now minus the TTL.
local more = 0
local upTo = math.max(through, lapsedBy)
if lapsedBy > through then
  local found = rcall("ZRANGEBYSCORE", lastSeenKey, "(" .. cursor(through), cursor(lapsedBy), "WITHSCORES",
    "LIMIT", 0, perCall)
  if #found == 2 * perCall then
    -- Stop at the last one's time, with every device seen at that same time, so the
    -- next call starts after it.
    more = 1
    upTo = tonumber(found[#found])
    found = rcall("ZRANGEBYSCORE", lastSeenKey, "(" .. cursor(through), found[#found], "WITHSCORES")
  end
  for first = 1, #found, 2 * CHUNK do
    local part, scores = {}, {}
    for i = first, math.min(first + 2 * CHUNK - 1, #found), 2 do
      part[#part + 1] = found[i]
      scores[#scores + 1] = tonumber(found[i + 1])
    end
    local flags = rcall("SMISMEMBER", offlineKey, unpack(part))
    for i = 1, #part do
      if flags[i] == 1 then
        -- Marked offline before this cursor, seen since, and lapsed again by now.
        announce("device.online", part[i], scores[i])
        online = online + 1
      else
        rcall("SADD", offlineKey, part[i])
      end
      announce("device.offline", part[i], scores[i] + presenceTtl)
      offline = offline + 1
    end
  end
end

rcall("HSET", watchKey, "through", cursor(upTo), "now", cursor(now))
return {offline, online, more}

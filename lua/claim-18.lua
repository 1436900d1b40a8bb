--[[
  Claim messages for one device: first its own claimed messages whose lease ran out
  (redelivered to the same phone, which de-duplicates by id), then its own queue, then
  its shard's pool (only while the device is online). Stops at the first message that
  does not fit the device's send budget, so order is kept. Each claimed message is
  leased until now + lease. A claim that passes the poll limit refreshes the device's
  presence first, as a heartbeat does (so a waiting long poll keeps its phone online);
  a long poll's claim (ARGV[12] not "-") lists the device as waiting when it hands
  nothing (includes/wakeups).

  Input:
    KEYS[1]  device hash                    {S}:device:<device>
    KEYS[2]  device send window             {S}:device:<device>:window
    KEYS[3]  messages hash                  {S}:messages
    KEYS[4]  counters hash                  {S}:counters
    KEYS[5]  device queue                   {S}:queue
    KEYS[6]  leased set                     {S}:leased
    KEYS[7]  lease checks sorted set        {S}:lease-checks
    KEYS[8]  expiry sorted set              {S}:expiry
    KEYS[9]  pool sorted set                {S}:pool
    KEYS[10] pool state hash                {S}:pool:state
    KEYS[11] last-seen sorted set           {S}:last-seen
    KEYS[12] events stream                  {S}:events
    KEYS[13] device's poll rate limiter     {S}:rate:tasks:<device>
    KEYS[14] shard owner's account hash     {S}:account (absent for a platform pool)
    KEYS[15] waiting set                    {S}:waiting
    KEYS[16] presence key                   {S}:device:<device>:presence
    KEYS[17] pool's high-priority set       {S}:pool:high
    KEYS[18] failing phones hash            {S}:pool-failures

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  most messages to return (1..100)
    ARGV[4]  lease (ms)
    ARGV[5]  most leases per message
    ARGV[6]  presence TTL (ms)
    ARGV[7]  polls per minute, unless the account hash sets tasks_per_minute
    ARGV[8]  poll burst, unless the account hash sets tasks_burst
    ARGV[9]  1: claim the shard's pool here (step 3); 0: the caller claims a sharded
             platform pool shard by shard with pool-take, and needs the budget this
             claim leaves and the device's turn
    ARGV[10] 1: refuse the claim when the poll limiter is empty; 0: never refuse
    ARGV[11] 1: charge the poll limiter when the claim hands nothing; 0: never charge
             (a claim that hands something is never charged)
    ARGV[12] "-": a plain poll; else a long poll's claim: the end of its wait (ms), or
             0 for the claim that ends it (see noteWaiting in includes/wakeups)
    ARGV[13] a send window's intervals left (ms) below which the claim asks for more

  Output:
    {{remaining, burst, reset_ms, refresh}, {id, to, body, segments, sim slot, encrypted}, ...}: the
    poll rate limiter after this claim (whether it was charged or not), 1 when the send
    window needs its next intervals written (else 0), then the claimed messages, oldest
    first (none when nothing fits).
    With ARGV[9] 0 the first element goes on: {..., minute_used, per_minute, day_used,
    per_day, online (0/1), turn}, the budget after this claim, whether the device is
    online and inside its send window, and a number that grows by one each claim (where
    its pool visit starts).

  Send window (the device hash's send_open, broker/send_windows.py): outside it the
  device is handed nothing new, neither from its queue nor from the pool; its own
  expired leases are still redelivered. A long poll outside it is not listed as
  waiting (a wake-up would be wasted on it).

  A phone whose recent reports here all failed is skipped by the pool for a while
  (includes/failures); its own queue is not.

  Budget: the device hash's per_minute (segments in any 60 s) and per_day (segments
  per UTC day). A message longer than a whole budget may go out when that budget is
  wholly unused. Redelivery does not charge the budget again. The window holds one
  entry per charging claim, "<now>:<last id>:<segments>", and the device hash keeps
  their sum (window_used), so a claim reads only the entries that leave the window.

  A queued message whose TTL has passed is not handed out: it becomes expired here,
  as the sweep would make it.

  Errors:
    DEVICE_NOT_FOUND               no such device (removed, or never paired)
    RATE_LIMITED <retry after ms> <remaining> <reset ms> <burst>
                                   polled too often; nothing changed
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/pool"
--- @include "includes/leases"
--- @include "includes/gcra"
--- @include "includes/claiming"
--- @include "includes/wakeups"
--- @include "includes/failures"

local deviceKey = KEYS[1]
local windowKey = KEYS[2]
local queueKey = KEYS[5]
local poolKey = KEYS[9]
local poolStateKey = KEYS[10]
local lastSeenKey = KEYS[11]
local rateKey = KEYS[13]
local accountKey = KEYS[14]
local waitingKey = KEYS[15]
local presenceKey = KEYS[16]

local device = ARGV[1]
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local presenceTtl = tonumber(ARGV[6])
local pollsPerMinute = tonumber(ARGV[7])
local pollBurst = tonumber(ARGV[8])
local poolHere = ARGV[9] == "1"
local refuse = ARGV[10] == "1"
local chargeEmpty = ARGV[11] == "1"
local wait = ARGV[12]

local limits = rcall("HMGET", deviceKey, "per_minute", "per_day", "day", "day_used", "window_used", "send_open")
if not limits[1] then
  return redis.error_reply("DEVICE_NOT_FOUND " .. device)
end
local overrides = rcall("HMGET", accountKey, "tasks_per_minute", "tasks_burst")
if tonumber(overrides[1] or "") and tonumber(overrides[1]) > 0 then
  pollsPerMinute = tonumber(overrides[1])
end
if tonumber(overrides[2] or "") and tonumber(overrides[2]) > 0 then
  pollBurst = tonumber(overrides[2])
end
local pollInterval = 60000 / pollsPerMinute
local rate = gcraCheck(rateKey, now, pollInterval, pollBurst, 1)
if refuse and not rate.allowed then
  return gcraRefusal(rate)
end
-- A claim is the phone at work: it is online, as after a heartbeat.
rcall("HSET", deviceKey, "last_seen", now)
rcall("SET", presenceKey, now, "PX", presenceTtl)
rcall("ZADD", lastSeenKey, now, device)

local c = newClaim(device, now, limit, tonumber(ARGV[4]), tonumber(ARGV[5]), {
  messages = KEYS[3], events = KEYS[12], expiry = KEYS[8], leased = KEYS[6], leaseChecks = KEYS[7]
})
c.perMinute = tonumber(limits[1])
c.perDay = tonumber(limits[2])
local today = math.floor(now / 86400000)
if tonumber(limits[3]) == today then
  c.dayUsed = tonumber(limits[4])
end
local windowBefore = tonumber(limits[5] or "0")
c.minuteUsed = windowBefore
local leaving = rcall("ZRANGEBYSCORE", windowKey, "-inf", now - 60000)
if #leaving > 0 then
  for i = 1, #leaving do
    c.minuteUsed = c.minuteUsed - tonumber(string.match(leaving[i], ":(%d+)$"))
  end
  rcall("ZREMRANGEBYSCORE", windowKey, "-inf", now - 60000)
end

local windowOpen, windowStale = sendWindow(limits[6], now, tonumber(ARGV[13]))
if not windowOpen and wait ~= "-" then
  wait = "0"
end

-- 1. This device's own leases that ran out.
redeliver(c)

-- 2. This device's own queue.
local budgetFull = false
if windowOpen and #c.claimed < limit then
  local queued = rcall("ZRANGEBYLEX", queueKey, "[" .. device .. ":", "(" .. device .. ";",
    "LIMIT", 0, limit - #c.claimed)
  local ids = {}
  for i = 1, #queued do
    ids[i] = queuedId(queued[i], device)
  end
  local found = loadMessages(c.messagesKey, ids)
  for i = 1, #queued do
    local msg = found[i]
    if msg and now < msg.expires and not fits(c, msg.segments) then
      budgetFull = true
      break
    end
    bulkAdd(c.bulk, "ZREM", queueKey, queued[i])
    if msg and now >= msg.expires then
      expireOne(c, msg)
    elseif msg then
      claimOne(c, msg)
    end
  end
end

-- 3. The pool, fair across senders, only for a device that is online.
local online = isOnline(lastSeenKey, device, now, presenceTtl)
if poolHere and not budgetFull and online and windowOpen and not poolSkips(KEYS[18], device, now) then
  claimFromPool(c, {key = poolKey, state = poolStateKey, high = KEYS[17]})
end

bulkRun(c.bulk)
flush(c.batch, c.messagesKey, KEYS[4])
local claimed = c.claimed
if c.charged > 0 then
  rcall("ZADD", windowKey, now, now .. ":" .. claimed[#claimed][1] .. ":" .. c.charged)
  rcall("HSET", deviceKey, "day", today, "day_used", c.dayUsed, "window_used", c.minuteUsed)
elseif c.minuteUsed ~= windowBefore then
  rcall("HSET", deviceKey, "window_used", c.minuteUsed)
end
noteWaiting(waitingKey, device, wait, #claimed, now)
if chargeEmpty and #claimed == 0 then
  gcraCommit(rate, now)
else
  rate = gcraCheck(rateKey, now, pollInterval, pollBurst, 0)
end
local head = {rate.remaining, pollBurst, rate.reset, windowStale and 1 or 0}
if not poolHere then
  local turn = rcall("HINCRBY", deviceKey, "pool_turn", 1)
  head = {rate.remaining, pollBurst, rate.reset, windowStale and 1 or 0, c.minuteUsed, c.perMinute,
    c.dayUsed, c.perDay, (online and windowOpen) and 1 or 0, turn}
end
table.insert(claimed, 1, head)
return claimed

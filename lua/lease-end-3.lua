--[[
  A claim whose answer never reached its phone (the write was not copied to the
  replicas in time, so the phone was answered 503): the leases it took end now, so the
  phone's next claim is handed the same messages again (a device's expired leases come
  first, to the same phone; see claim and sweep), instead of after a whole lease. Each
  lease is given back to the message's count of leases, as the phone never had it.

  A message the device no longer holds (reported meanwhile, gone back to the pool, or
  held by another device) is left alone, as is one whose lease has already run out.

  Input:
    KEYS[1]  messages hash                  {S}:messages
    KEYS[2]  leased set                     {S}:leased
    KEYS[3]  lease checks sorted set        {S}:lease-checks

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3..] message ids

  Output:
    the number of leases ended
]]
local rcall = redis.call
--- @include "includes/bulk"
--- @include "includes/messages"
--- @include "includes/leases"

local messagesKey = KEYS[1]
local leasedKey = KEYS[2]
local leaseChecksKey = KEYS[3]
local device = ARGV[1]
local now = tonumber(ARGV[2])
if not now or device == "" then
  return redis.error_reply("BAD_REQUEST device and now are required")
end

local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local found = loadMessages(messagesKey, ids)
local bulk = newBulk()
local batch = newBatch()
local ended = 0
for i = 1, #ids do
  local msg = found[i]
  if msg and msg.status == "claimed" and msg.device == device and msg.lease_until > now then
    bulkAdd(bulk, "ZREM", leasedKey, leasedMember(device, msg.lease_until, msg.id))
    msg.lease_until = now
    if msg.leases > 0 then
      msg.leases = msg.leases - 1
    end
    bulkAdd(bulk, "ZADD", leasedKey, 0, leasedMember(device, now, msg.id))
    bulkAdd(bulk, "ZADD", leaseChecksKey, now, msg.id)
    keep(batch, msg)
    ended = ended + 1
  end
end
bulkRun(bulk)
flush(batch, messagesKey, nil) -- no status changes: the records alone
return ended

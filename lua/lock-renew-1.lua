--[[
  Renew a lock's lease, only for the holder and token that took it.

  Input:
    KEYS[1]  lock                   a shard's background lease, {S}:background

    ARGV[1]  holder
    ARGV[2]  fencing token it was given
    ARGV[3]  lease (ms)

  Output:
    1 when renewed; 0 when the lease lapsed or another holder (or token) has the lock
    since: the caller has lost it and must stop.
]]
local rcall = redis.call
local lock = KEYS[1]

if rcall("GET", lock) ~= ARGV[1] .. "|" .. ARGV[2] then
  return 0
end
rcall("PEXPIRE", lock, tonumber(ARGV[3]))
return 1

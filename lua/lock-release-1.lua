--[[
  Release a lock, only for the holder and token that took it.

  Input:
    KEYS[1]  lock                   a shard's background lease, {S}:background

    ARGV[1]  holder
    ARGV[2]  fencing token it was given

  Output:
    1 when released; 0 when the lock is not (or no longer) this holder's with this
    token: another holder's lock is never released.
]]
local rcall = redis.call
local lock = KEYS[1]

if rcall("GET", lock) ~= ARGV[1] .. "|" .. ARGV[2] then
  return 0
end
rcall("DEL", lock)
return 1

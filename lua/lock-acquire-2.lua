--[[
  Take a lock for a holder, with a fencing token: a number that grows with every new
  holder, so work done under a lapsed lease can be told from the current holder's.

  Input:
    KEYS[1]  lock                   a shard's background lease, {S}:background
    KEYS[2]  its fencing counter    {S}:background:fence

    ARGV[1]  holder (a process's own id, no "|")
    ARGV[2]  lease (ms)

  Output:
    the fencing token (>= 1) when the holder has the lock: a new token when the lock
    was free, the holder's own when it held it already (its lease then starts again);
    0 while another holder's lease runs (nothing changes).
]]
local rcall = redis.call
local lock = KEYS[1]
local fence = KEYS[2]
local holder = ARGV[1]
local lease = tonumber(ARGV[2])

local current = rcall("GET", lock)
if current then
  local sep = string.find(current, "|", 1, true)
  if sep and string.sub(current, 1, sep - 1) == holder then
    rcall("PEXPIRE", lock, lease)
    return tonumber(string.sub(current, sep + 1))
  end
  return 0
end
local token = rcall("INCR", fence)
rcall("SET", lock, holder .. "|" .. token, "PX", lease)
return token

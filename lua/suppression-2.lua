--[[
  Put a number on a sender's suppression list, or take it off.

  Input:
    KEYS[1]  the list's order              {S}:suppressed:<account> (zset, every score 0)
    KEYS[2]  the list's entries            {S}:suppression:<account> (hash)

    ARGV[1]  "add" or "remove"
    ARGV[2]  number (E.164)
    ARGV[3]  for add: the entry's JSON (reason, created_ms)

  Output:
    1 when the list changed; 0 when it was so already (an entry added again keeps its
    first reason and time)
]]
local rcall = redis.call
if ARGV[1] == "add" then
  if rcall("HSETNX", KEYS[2], ARGV[2], ARGV[3]) == 0 then
    return 0
  end
  rcall("ZADD", KEYS[1], 0, ARGV[2])
  return 1
elseif ARGV[1] == "remove" then
  rcall("ZREM", KEYS[1], ARGV[2])
  return rcall("HDEL", KEYS[2], ARGV[2])
end
return redis.error_reply("BAD_REQUEST unknown operation")

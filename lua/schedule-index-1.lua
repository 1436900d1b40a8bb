--[[
  Move one shard's entry in the index of shards with scheduled messages after a
  release pass: to the earliest send_at still scheduled there, or out of the index
  when none is. Only when the entry is still what the pass read: an enqueue that
  scheduled an earlier message meanwhile lowered it (ZADD LT), and that stays.

  Input:
    KEYS[1]  the index                      {scheduled} (shard tag -> earliest send_at)

    ARGV[1]  shard tag
    ARGV[2]  the entry's score the pass read (ms)
    ARGV[3]  the earliest send_at still scheduled in the shard (ms); 0: none

  Output:
    1 when the entry moved or went, 0 when it was left as an enqueue made it
]]
local rcall = redis.call
local tag = ARGV[1]
local seen = tonumber(ARGV[2])
local nextDue = tonumber(ARGV[3])
local current = rcall("ZSCORE", KEYS[1], tag)
if current and tonumber(current) ~= seen then
  if nextDue > 0 then
    rcall("ZADD", KEYS[1], "LT", nextDue, tag)
  end
  return 0
end
if nextDue > 0 then
  rcall("ZADD", KEYS[1], nextDue, tag)
else
  rcall("ZREM", KEYS[1], tag)
end
return 1

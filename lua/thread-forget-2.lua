--[[
  Drop inbox threads whose newest message is gone: in neither Redis nor the history
  store, which deletes messages past its retention. Each is dropped only if it is still
  at that message: one a new message moved meanwhile stays.

  Input:
    KEYS[1]  the account's inbox threads    {S}:threads:<account>
    KEYS[2]  each thread's newest id        {S}:threads:<account>:newest

    ARGV[1..] counterpart, newest id pairs (at most a page of threads per call)

  Output:
    the number of threads dropped

  Errors:
    none
]]
local rcall = redis.call

local threadsKey = KEYS[1]
local newestKey = KEYS[2]

local dropped = 0
for i = 1, #ARGV - 1, 2 do
  local counterpart, id = ARGV[i], ARGV[i + 1]
  if rcall("HGET", newestKey, counterpart) == id then
    rcall("HDEL", newestKey, counterpart)
    rcall("ZREM", threadsKey, id .. "|" .. counterpart)
    dropped = dropped + 1
  end
end
return dropped

--[[
  The inbox's threads of one account: the numbers (and sender names) that wrote to it,
  each at its conversation's newest message, received or sent.

    {S}:threads:<account>          sorted set, every score 0: "<newest id>|<counterpart>",
                                   so the newest conversation is the last member
    {S}:threads:<account>:newest   hash: counterpart -> that newest id

  A received SMS makes its sender's thread, or moves it; a message sent to a number
  that has a thread moves it (one that never wrote gets none: an account sending to
  thousands of numbers would otherwise have a thread for each). Ids sort by time, so a
  later message replaces an earlier one and never the other way round.
]]

-- Whether id a sorts after id b, byte by byte (Lua's own < follows the server's locale).
local function idAfter(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return #a > #b
end

-- Move the thread of counterpart to message id, unless it is at a later one already;
-- current is the thread's newest id (false or nil: no thread yet). Returns the newest id now.
local function moveThread(threadsKey, newestKey, counterpart, id, current)
  if current and not idAfter(id, current) then
    return current
  end
  if current then
    rcall("ZREM", threadsKey, current .. "|" .. counterpart)
  end
  rcall("ZADD", threadsKey, 0, id .. "|" .. counterpart)
  rcall("HSET", newestKey, counterpart, id)
  return id
end

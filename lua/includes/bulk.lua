--[[
  Commands gathered while a script runs and sent once per (command, key) at the end,
  in the order each pair was first used: one ZADD with twenty members costs far less
  than twenty ZADDs. A script must not gather a ZREM and a ZADD of the same member of
  the same key (their order would not be kept).
]]
local function newBulk()
  return {order = {}, args = {}}
end

local function bulkAdd(bulk, command, key, ...)
  local id = command .. " " .. key
  local list = bulk.args[id]
  if not list then
    list = {}
    bulk.args[id] = list
    bulk.order[#bulk.order + 1] = {command, key, id}
  end
  for i = 1, select("#", ...) do
    list[#list + 1] = select(i, ...)
  end
end

local function bulkRun(bulk)
  for i = 1, #bulk.order do
    local entry = bulk.order[i]
    local args = bulk.args[entry[3]]
    -- unpack in chunks of an even size (ZADD takes pairs): Lua's C stack holds a few
    -- thousand values at most
    for first = 1, #args, 1000 do
      rcall(entry[1], entry[2], unpack(args, first, math.min(first + 999, #args)))
    end
  end
end

--[[
  Change a device's name or send budget; fields given as "" are left as they are.

  Input:
    KEYS[1]  device hash                    {S}:device:<device>

    ARGV[1]  device id
    ARGV[2]  name, "" to keep
    ARGV[3]  segments per minute, "" to keep
    ARGV[4]  segments per day, "" to keep

  Output:
    "OK"

  Errors:
    DEVICE_NOT_FOUND               no such device
]]
local rcall = redis.call

local deviceKey = KEYS[1]

if rcall("EXISTS", deviceKey) == 0 then
  return redis.error_reply("DEVICE_NOT_FOUND " .. ARGV[1])
end
local names = {"name", "per_minute", "per_day"}
local fields = {}
for i = 1, 3 do
  if ARGV[1 + i] ~= "" then
    fields[#fields + 1] = names[i]
    fields[#fields + 1] = ARGV[1 + i]
  end
end
if #fields > 0 then
  rcall("HSET", deviceKey, unpack(fields))
end
return "OK"

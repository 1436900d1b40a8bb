--[[
  A device says it is alive. The presence key lives for the presence TTL (three
  missed beats); the last-seen sorted set is what scripts read to tell online from
  offline, against the now they are given. Optional fields are kept when not "".

  Input:
    KEYS[1]  device hash                    {S}:device:<device>
    KEYS[2]  presence key                   {S}:device:<device>:presence
    KEYS[3]  last-seen sorted set           {S}:last-seen

    ARGV[1]  device id
    ARGV[2]  now (ms)
    ARGV[3]  presence TTL (ms)
    ARGV[4]  battery percent, "" if not sent
    ARGV[5]  Android version, "" if not sent
    ARGV[6]  app version, "" if not sent

  Output:
    now, as the last-seen time (ms)

  Errors:
    DEVICE_NOT_FOUND               no such device (removed, or never paired)
]]
local rcall = redis.call

local deviceKey = KEYS[1]
local presenceKey = KEYS[2]
local lastSeenKey = KEYS[3]

local device = ARGV[1]
local now = tonumber(ARGV[2])
local presenceTtl = tonumber(ARGV[3])

if rcall("EXISTS", deviceKey) == 0 then
  return redis.error_reply("DEVICE_NOT_FOUND " .. device)
end
local fields = {"last_seen", now}
local names = {"battery", "android_version", "app_version"}
for i = 1, 3 do
  if ARGV[3 + i] ~= "" then
    fields[#fields + 1] = names[i]
    fields[#fields + 1] = ARGV[3 + i]
  end
end
rcall("HSET", deviceKey, unpack(fields))
rcall("SET", presenceKey, now, "PX", presenceTtl)
rcall("ZADD", lastSeenKey, now, device)
return now

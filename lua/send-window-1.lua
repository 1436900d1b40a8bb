--[[
  Set or clear a device's send window (broker/send_windows.py): the window as given
  and the UTC intervals it opens for.

  Input:
    KEYS[1]  device hash                    {S}:device:<device>

    ARGV[1]  device id
    ARGV[2]  the window (JSON), "" to clear it
    ARGV[3]  its intervals, "<start ms>-<end ms>,..." ("" with ARGV[2] "")
    ARGV[4]  "*", or the window the caller read: then the write happens only while
             the device still has that window (a refresh never undoes a change)

  Output:
    1 when written, 0 when the window had changed

  Errors:
    DEVICE_NOT_FOUND               no such device
]]
local rcall = redis.call
local deviceKey = KEYS[1]

if rcall("EXISTS", deviceKey) == 0 then
  return redis.error_reply("DEVICE_NOT_FOUND " .. ARGV[1])
end
if ARGV[4] ~= "*" and rcall("HGET", deviceKey, "send_window") ~= ARGV[4] then
  return 0
end
if ARGV[2] == "" then
  rcall("HDEL", deviceKey, "send_window", "send_open")
else
  rcall("HSET", deviceKey, "send_window", ARGV[2], "send_open", ARGV[3])
end
return 1

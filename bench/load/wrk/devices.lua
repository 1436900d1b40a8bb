-- One request per device in turn, each with that device's own token: BENCH_DEVICES is a
-- file of "device_id token" lines, BENCH_PATH a path with %s for the device id,
-- BENCH_METHOD the method, BENCH_BODY_FILE an optional JSON body.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local devices = {}
for line in io.lines(os.getenv("BENCH_DEVICES")) do
  local id, token = line:match("^(%S+) (%S+)$")
  if id then devices[#devices + 1] = {id, token} end
end
local body = nil
local path = os.getenv("BENCH_BODY_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb")); body = f:read("*a"); f:close()
end
local method = os.getenv("BENCH_METHOD") or "GET"
local template = os.getenv("BENCH_PATH")
local n = math.random(#devices)
request = function()
  n = n % #devices + 1
  local d = devices[n]
  return wrk.format(method, string.format(template, d[1]),
                    {["X-Device-Token"] = d[2], ["Content-Type"] = "application/json"}, body)
end

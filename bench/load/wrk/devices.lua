-- One request per device in turn, each with that device's own token: BENCH_DEVICES is a
-- file of "device_id token" lines, BENCH_PATH a path with %s for the device id (method
-- and body: see common.lua).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local devices = {}
for line in io.lines(os.getenv("BENCH_DEVICES")) do
  local id, token = line:match("^(%S+) (%S+)$")
  if id then devices[#devices + 1] = {id, token} end
end
local template = os.getenv("BENCH_PATH")
local n = math.random(#devices)
request = function()
  n = n % #devices + 1
  local d = devices[n]
  return wrk.format(bench_method, string.format(template, d[1]),
                    {["X-Device-Token"] = d[2], ["Content-Type"] = "application/json"}, bench_body)
end

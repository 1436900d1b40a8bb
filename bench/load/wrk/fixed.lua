-- The same request every time: method, path and body from BENCH_METHOD, BENCH_PATH and
-- BENCH_BODY_FILE (JSON; optional).
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local body = nil
local path = os.getenv("BENCH_BODY_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb")); body = f:read("*a"); f:close()
end
local method = os.getenv("BENCH_METHOD") or "GET"
local target = os.getenv("BENCH_PATH") or "/"
request = function()
  return wrk.format(method, target, {["Content-Type"] = "application/json"}, body)
end

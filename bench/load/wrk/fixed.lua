-- The same request every time, to BENCH_PATH (method and body: see common.lua).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local target = os.getenv("BENCH_PATH") or "/"
request = function()
  return wrk.format(bench_method, target, {["Content-Type"] = "application/json"}, bench_body)
end

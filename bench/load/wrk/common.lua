-- Shared by every wrk script of the bench: the request's method and JSON body from
-- BENCH_METHOD (default GET) and BENCH_BODY_FILE (optional), and at the end one JSON
-- line with the figures. wrk's latency is in microseconds; "status" counts answers that
-- were not 2xx/3xx.
bench_method = os.getenv("BENCH_METHOD") or "GET"
bench_body = nil
local path = os.getenv("BENCH_BODY_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb")); bench_body = f:read("*a"); f:close()
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end

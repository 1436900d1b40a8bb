--[[
  Queue stream entries of one shard into one lane of a webhook endpoint, each at most
  once, within the endpoint's backlog limit.

  The fan-out of a shard's stream is done by the background process holding that shard,
  while the lanes live in the endpoint's account shard, another slot: no fencing token
  of the source shard can be checked here. Instead the lane keeps a mark per source
  shard, the last entry queued from it, moved in the same call as the appends: a second
  fan-out of the same entries (a process that paused past its lease and came back, or
  entries read again after a crash) queues nothing twice, and a lane's events stay in
  stream order.

  Input:
    KEYS[1]  the endpoint                   {A}:webhook:<ep>
    KEYS[2]  the lane                       {A}:webhook:<ep>:lane:<k>

    ARGV[1]  the lane's mark field for the source shard, "mark:<shard>:<k>"
    ARGV[2]  the endpoint's mark field for that shard, "mark:<shard>" (written by
             earlier versions for all lanes at once), read while the lane has none
    ARGV[3]  the backlog limit: events waiting for the endpoint, all lanes together
    ARGV[4..] entry id ("<ms>-<seq>"), event JSON pairs, in stream order (at most a
             thousand pairs per call)

  Output:
    {queued, dropped}: events appended, and events past the mark that found no room
    (both also counted on the endpoint). An endpoint deleted or disabled meanwhile gets
    nothing: {0, 0}.
]]
local rcall = redis.call
local endpointKey = KEYS[1]
local laneKey = KEYS[2]
local markField = ARGV[1]
local backlog = tonumber(ARGV[3])

-- Whether entry id a comes after entry id b in the stream.
local function after(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end

local ep = rcall("HMGET", endpointKey, "url", "disabled_ms", "queued", markField, ARGV[2])
if not ep[1] or (ep[2] and ep[2] ~= "0" and ep[2] ~= "") then
  return {0, 0}
end
local room = backlog - (tonumber(ep[3]) or 0)
local mark = ep[4] or ep[5] or ""

local queued, dropped, last = 0, 0, nil
for i = 4, #ARGV - 1, 2 do
  local id = ARGV[i]
  if mark == "" or after(id, mark) then
    if queued < room then
      rcall("RPUSH", laneKey, ARGV[i + 1])
      queued = queued + 1
    else
      dropped = dropped + 1
    end
    last = id
  end
end
if queued > 0 then
  rcall("HINCRBY", endpointKey, "queued", queued)
end
if dropped > 0 then
  rcall("HINCRBY", endpointKey, "dropped", dropped)
end
if last then
  rcall("HSET", endpointKey, markField, last)
end
return {queued, dropped}

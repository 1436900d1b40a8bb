--[[
  Record that chunk <k> of a campaign's rows was queued: the message ids it made, the
  rows it passed over (their numbers were suppressed by then), and where the next chunk
  starts. A paused campaign goes back to sending. Once every row is queued a sending or
  paused campaign is done: it leaves the
  active set, its rows are deleted and its deletion is set after the retention time.
  A chunk recorded already (by a process that held the shard before) changes nothing.

  Input:
    KEYS[1]  campaign hash                  {S}:campaign:<account>:<c>
    KEYS[2]  campaign's message ids         {S}:campaign:<account>:<c>:sent
    KEYS[3]  campaign's rows                {S}:campaign:<account>:<c>:rows
    KEYS[4]  active campaigns set           {S}:campaigns:active
    KEYS[5]  campaign deletion times        {S}:campaigns:expiry

    ARGV[1]  member of the active set       <account>|<c>
    ARGV[2]  the chunk's index k
    ARGV[3]  the row the next chunk starts at (0-based index into the rows)
    ARGV[4]  rows passed over in this chunk
    ARGV[5]  now (ms)
    ARGV[6]  retention of a finished campaign (ms)
    then the ids of the chunk's messages

  Output:
    {state, recorded}: the campaign's state after it; recorded 1, or 0 when the chunk
    was recorded before

  Errors:
    CAMPAIGN_NOT_FOUND              no such campaign
]]
local rcall = redis.call
local campaignKey = KEYS[1]
local sentKey = KEYS[2]
local rowsKey = KEYS[3]
local activeKey = KEYS[4]
local expiryKey = KEYS[5]

local member = ARGV[1]
local chunk = tonumber(ARGV[2])
local nextRow = tonumber(ARGV[3])
local passed = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local retention = tonumber(ARGV[6])

local found = rcall("HMGET", campaignKey, "state", "chunk", "valid")
local state = found[1]
if not state then
  return redis.error_reply("CAMPAIGN_NOT_FOUND no such campaign")
end
if tonumber(found[2] or "0") ~= chunk then
  return {state, 0}
end
for first = 7, #ARGV, 1000 do
  rcall("RPUSH", sentKey, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
rcall("HSET", campaignKey, "chunk", chunk + 1, "next_row", nextRow, "plan", "", "updated", now, "resume_at", "")
rcall("HINCRBY", campaignKey, "skipped", passed)
if state == "paused" then
  state = "sending"
  rcall("HSET", campaignKey, "state", state, "reason", "")
end
if nextRow >= tonumber(found[3]) and (state == "sending" or state == "paused") then
  state = "done"
  rcall("HSET", campaignKey, "state", state, "finished", now, "reason", "")
  rcall("SREM", activeKey, member)
  rcall("DEL", rowsKey)
  rcall("ZADD", expiryKey, now + retention, member)
end
return {state, 1}

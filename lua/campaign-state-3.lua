--[[
  Move a campaign from one state to another (start, pause, resume, cancel), as
  broker/campaigns.py asks; a campaign the background job must work on (sending,
  paused, cancelled with messages still to cancel) is in the shard's active set, and a
  campaign in it is no longer up for deletion.

  Input:
    KEYS[1]  campaign hash                  {S}:campaign:<account>:<c>
    KEYS[2]  active campaigns set           {S}:campaigns:active
    KEYS[3]  campaign deletion times        {S}:campaigns:expiry

    ARGV[1]  member of the active set       <account>|<c>
    ARGV[2]  the new state                  sending | paused | cancelled
    ARGV[3]  the states it may move from, comma-separated
    ARGV[4]  now (ms), kept as "updated"
    then field, value pairs to set with it (e.g. reason, resume_at)

  Output:
    the state it had

  Errors:
    CAMPAIGN_NOT_FOUND              no such campaign
    CAMPAIGN_STATE <current>        it is in a state that cannot move to the new one
]]
local rcall = redis.call
local campaignKey = KEYS[1]
local activeKey = KEYS[2]
local expiryKey = KEYS[3]

local member = ARGV[1]
local target = ARGV[2]
local allowed = ARGV[3]

local current = rcall("HGET", campaignKey, "state")
if not current then
  return redis.error_reply("CAMPAIGN_NOT_FOUND no such campaign")
end
local permitted = false
for state in string.gmatch(allowed, "[^,]+") do
  if state == current then
    permitted = true
  end
end
if not permitted then
  return redis.error_reply("CAMPAIGN_STATE " .. current)
end
local fields = {"state", target, "updated", ARGV[4]}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
rcall("HSET", campaignKey, unpack(fields))
rcall("SADD", activeKey, member)
rcall("ZREM", expiryKey, member)
return current

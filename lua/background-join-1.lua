--[[
  A background process's heartbeat in the registry of live background processes (which
  share the shards out between them), with the guard that keeps the history in one
  store: a host whose history store is a local SQLite file never works beside another
  host's background process, since each would copy its own shards into its own file.

  A member is "<holder>|<host>|<store>|<label>": holder, the process's own id; host, the
  id of its host (machine and data directory); store, "local" (a SQLite file) or
  "shared"; label, the host as a person reads it. Its score is its deadline: a process
  whose deadline passed is dead and removed by whoever beats next.

  Input:
    KEYS[1]  registry                       {background}

    ARGV[1]  this process's member
    ARGV[2]  now (ms)
    ARGV[3]  this process's new deadline (ms)

  Output:
    {1, live processes, this one included} when registered (or its deadline moved on);
    {0, the member it conflicts with} when refused: it was not registered (joining, or
    back after its entry ran out) and another host's live process is there while this
    one's store or that one's is local. Nothing is written then but the removal of dead
    entries.
]]
local rcall = redis.call
local registry = KEYS[1]
local me = ARGV[1]
local now = tonumber(ARGV[2])
local deadline = tonumber(ARGV[3])

-- The n-th "|"-separated field of a member ("" past the last).
local function field(member, n)
  local start = 1
  for _ = 1, n - 1 do
    local sep = string.find(member, "|", start, true)
    if not sep then
      return ""
    end
    start = sep + 1
  end
  local sep = string.find(member, "|", start, true)
  return string.sub(member, start, (sep or 0) - 1)
end

rcall("ZREMRANGEBYSCORE", registry, "-inf", "(" .. now)
if not rcall("ZSCORE", registry, me) then
  local host, store = field(me, 2), field(me, 3)
  local live = rcall("ZRANGE", registry, 0, -1)
  for i = 1, #live do
    if field(live[i], 2) ~= host and (store == "local" or field(live[i], 3) == "local") then
      return {0, live[i]}
    end
  end
end
rcall("ZADD", registry, deadline, me)
return {1, rcall("ZCARD", registry)}

--[[
  A pool: one sorted set of queued message ids scored by virtual finish time, and a
  hash of per-sender state, so that a claim that pops the lowest scores serves the
  senders that have queued messages in round robin (start-time fair queuing).

  Pool state hash fields:
    v            virtual time: the score of the message claimed last
    f:<account>  the sender's last finish tag
    n:<account>  how many of the sender's messages are queued in the pool
  A sender's k-th queued message scores max(v, f) + 1: a sender with a backlog of a
  million cannot push another sender's single message back by more than one round.
]]

-- Queue ids of one sender at the back of its turn order.
local function poolPush(bulk, poolKey, stateKey, account, ids)
  local state = rcall("HMGET", stateKey, "v", "f:" .. account)
  local f = tonumber(state[2] or "0")
  local v = tonumber(state[1] or "0")
  if f < v then
    f = v
  end
  for i = 1, #ids do
    f = f + 1
    bulkAdd(bulk, "ZADD", poolKey, f, ids[i])
  end
  rcall("HSET", stateKey, "f:" .. account, f)
  rcall("HINCRBY", stateKey, "n:" .. account, #ids)
end

-- Put a message back at the front of the pool (its phone went away).
local function poolReturn(bulk, poolKey, stateKey, account, id)
  local v = rcall("HGET", stateKey, "v") or "0"
  bulkAdd(bulk, "ZADD", poolKey, v, id)
  rcall("HSETNX", stateKey, "f:" .. account, v)
  rcall("HINCRBY", stateKey, "n:" .. account, 1)
end

-- A sender's count of queued pool messages went down by `gone`; once it has none, its
-- finish tag is forgotten so a cancelled backlog does not push it back later.
local function poolForget(stateKey, account, gone)
  if tonumber(rcall("HINCRBY", stateKey, "n:" .. account, -gone)) <= 0 then
    rcall("HDEL", stateKey, "n:" .. account, "f:" .. account)
  end
end

local function poolRemove(poolKey, stateKey, account, id)
  if rcall("ZREM", poolKey, id) == 1 then
    poolForget(stateKey, account, 1)
  end
end

-- The claim took these pool messages ({id, account} pairs), the last at score `score`.
local function poolTaken(bulk, poolKey, stateKey, taken, score)
  local perSender, senders = {}, {}
  for i = 1, #taken do
    bulkAdd(bulk, "ZREM", poolKey, taken[i][1])
    local account = taken[i][2]
    if not perSender[account] then
      perSender[account] = 0
      senders[#senders + 1] = account
    end
    perSender[account] = perSender[account] + 1
  end
  rcall("HSET", stateKey, "v", score)
  for i = 1, #senders do
    poolForget(stateKey, senders[i], perSender[senders[i]])
  end
end

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
local function poolPush(poolKey, stateKey, account, id, atFront)
  local v = tonumber(rcall("HGET", stateKey, "v") or "0")
  local score
  if atFront then
    score = v
    if not rcall("HGET", stateKey, "f:" .. account) then
      rcall("HSET", stateKey, "f:" .. account, v)
    end
  else
    local f = tonumber(rcall("HGET", stateKey, "f:" .. account) or "0")
    if f < v then
      f = v
    end
    score = f + 1
    rcall("HSET", stateKey, "f:" .. account, score)
  end
  rcall("HINCRBY", stateKey, "n:" .. account, 1)
  rcall("ZADD", poolKey, score, id)
end

-- Forget a sender's finish tag once it has nothing queued, so an account that
-- cancelled a backlog is not pushed back by it later.
local function poolForget(stateKey, account)
  if tonumber(rcall("HINCRBY", stateKey, "n:" .. account, -1)) <= 0 then
    rcall("HDEL", stateKey, "n:" .. account, "f:" .. account)
  end
end

local function poolRemove(poolKey, stateKey, account, id)
  if rcall("ZREM", poolKey, id) == 1 then
    poolForget(stateKey, account)
  end
end

local function poolTaken(poolKey, stateKey, account, id, score)
  rcall("ZREM", poolKey, id)
  rcall("HSET", stateKey, "v", score)
  poolForget(stateKey, account)
end

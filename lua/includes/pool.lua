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

  Priority: the high set holds "<account>:<id>" (every score 0, so in time order) for
  each queued high-priority message of the pool. A score in the pool is a sender's
  turn, not a message's: when a claim reaches a turn of a sender that has high messages
  waiting, it hands out the sender's oldest high message instead, and the message the
  turn was for takes that high message's later turn (claimFromPool). Senders keep
  their turns; within its own turns a sender's high messages go first.

  A pool, `pool`: {key = the sorted set, state = the state hash, high = the high set}.
]]

local function highMember(account, id)
  return account .. ":" .. id
end

-- Queue messages (records) of one sender at the back of its turn order.
local function poolPush(bulk, pool, account, msgs)
  local state = rcall("HMGET", pool.state, "v", "f:" .. account)
  local f = tonumber(state[2] or "0")
  local v = tonumber(state[1] or "0")
  if f < v then
    f = v
  end
  for i = 1, #msgs do
    f = f + 1
    bulkAdd(bulk, "ZADD", pool.key, f, msgs[i].id)
    if msgs[i].priority == "high" then
      bulkAdd(bulk, "ZADD", pool.high, 0, highMember(account, msgs[i].id))
    end
  end
  rcall("HSET", pool.state, "f:" .. account, f)
  rcall("HINCRBY", pool.state, "n:" .. account, #msgs)
end

-- Put a message back at the front of the pool (its phone went away, or failed it).
local function poolReturn(bulk, pool, msg)
  local v = rcall("HGET", pool.state, "v") or "0"
  bulkAdd(bulk, "ZADD", pool.key, v, msg.id)
  if msg.priority == "high" then
    bulkAdd(bulk, "ZADD", pool.high, 0, highMember(msg.account, msg.id))
  end
  rcall("HSETNX", pool.state, "f:" .. msg.account, v)
  rcall("HINCRBY", pool.state, "n:" .. msg.account, 1)
end

-- A sender's count of queued pool messages went down by `gone`; once it has none, its
-- finish tag is forgotten so a cancelled backlog does not push it back later.
local function poolForget(pool, account, gone)
  if tonumber(rcall("HINCRBY", pool.state, "n:" .. account, -gone)) <= 0 then
    rcall("HDEL", pool.state, "n:" .. account, "f:" .. account)
  end
end

-- A queued pool message leaves the pool unclaimed (cancelled, expired).
local function poolRemove(pool, msg)
  if rcall("ZREM", pool.key, msg.id) == 1 then
    poolForget(pool, msg.account, 1)
  end
  if msg.priority == "high" then
    rcall("ZREM", pool.high, highMember(msg.account, msg.id))
  end
end

-- The claim took these pool messages (records), the last at score `score`; `moved`
-- lists {id, new score} of the messages that gave their turn away and were not taken.
local function poolTaken(bulk, pool, taken, score, moved)
  local perSender, senders = {}, {}
  for i = 1, #taken do
    local msg = taken[i]
    bulkAdd(bulk, "ZREM", pool.key, msg.id)
    if msg.priority == "high" then
      bulkAdd(bulk, "ZREM", pool.high, highMember(msg.account, msg.id))
    end
    if not perSender[msg.account] then
      perSender[msg.account] = 0
      senders[#senders + 1] = msg.account
    end
    perSender[msg.account] = perSender[msg.account] + 1
  end
  for i = 1, #moved do
    bulkAdd(bulk, "ZADD", pool.key, moved[i][2], moved[i][1])
  end
  rcall("HSET", pool.state, "v", score)
  for i = 1, #senders do
    poolForget(pool, senders[i], perSender[senders[i]])
  end
end

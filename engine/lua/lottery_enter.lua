-- Enter a lottery, or note likes for it; one entry per user, only while it is open.
-- A like-rule lottery needs both an entry request (the `enter` op or the keyword danmaku) and a
-- like, in either order: whichever comes second makes the entry, so each user enters once.
-- KEYS[1] lottery hash  KEYS[2] entrants zset (score 0)  KEYS[3] likers set  KEYS[4] waiting set
-- ARGV[1] mode: 'enter' (ARGV[3] is the user) or 'like' (ARGV[3..] are users)  ARGV[2] now (ms)
-- 'enter' returns entered | already | waiting_like | closed | missing;
-- 'like' returns the users it entered (an array), or 'closed' | 'missing'.
local s = redis.call('HMGET', KEYS[1], 'status', 'ends_at_ms', 'need_like')
if not s[1] then return 'missing' end
if s[1] ~= 'open' or tonumber(ARGV[2]) >= tonumber(s[2]) then return 'closed' end
local need_like = s[3] == '1'

if ARGV[1] == 'enter' then
  local user = ARGV[3]
  if redis.call('ZSCORE', KEYS[2], user) then return 'already' end
  if need_like and redis.call('SISMEMBER', KEYS[3], user) == 0 then
    redis.call('SADD', KEYS[4], user)
    return 'waiting_like'
  end
  redis.call('ZADD', KEYS[2], 0, user)
  return 'entered'
end

local entered = {}
if not need_like then return entered end  -- likes only count for like-rule lotteries
for i = 3, #ARGV do
  local user = ARGV[i]
  redis.call('SADD', KEYS[3], user)
  if redis.call('SREM', KEYS[4], user) == 1 and redis.call('ZADD', KEYS[2], 'NX', 0, user) == 1 then
    entered[#entered + 1] = user
  end
end
return entered

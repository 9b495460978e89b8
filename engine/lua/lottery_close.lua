-- Close a lottery for the draw, once: open -> drawing, with a claim token and a lease. Entry
-- stops at once (lottery_enter.lua wants 'open'). A claim whose lease ran out (its process died
-- mid-draw) may be taken over: the draw is a pure function of the seed and the frozen entrants,
-- so a second drawer computes the same result.
-- KEYS[1] lottery hash  KEYS[2] room's open-lotteries hash
-- ARGV[1] now (ms)  ARGV[2] claim token  ARGV[3] lease (ms)
-- Returns 1 when this caller now holds the draw, 0 when another does or it is drawn, -1 missing.
local s = redis.call('HMGET', KEYS[1], 'id', 'status', 'drawing_until_ms')
if not s[1] then return -1 end
local now = tonumber(ARGV[1])
if s[2] == 'drawing' then
  if tonumber(s[3]) > now then return 0 end
elseif s[2] ~= 'open' then
  return 0
else
  redis.call('HSET', KEYS[1], 'closed_at_ms', ARGV[1])
end
redis.call('HSET', KEYS[1], 'status', 'drawing', 'claim', ARGV[2],
           'drawing_until_ms', now + tonumber(ARGV[3]))
redis.call('HDEL', KEYS[2], s[1])
return 1

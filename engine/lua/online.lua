-- Report one gateway's local viewer count for a room and return the room's total.
--
-- KEYS[1]  hash gateway -> count
-- KEYS[2]  hash gateway -> expiry (ms)
-- KEYS[3]  (optional) the room's peak online total, raised when this total passes it
-- ARGV[1]  gateway id
-- ARGV[2]  this gateway's local count (0 removes its share)
-- ARGV[3]  now (ms, the caller's clock)
-- ARGV[4]  ttl of this report (ms)
--
-- Shares whose expiry passed belong to gateways that stopped reporting (crashed); they are
-- removed here, so a dead gateway's viewers leave the count within one ttl.
local gw, count = ARGV[1], tonumber(ARGV[2])
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if count > 0 then
  redis.call('HSET', KEYS[1], gw, count)
  redis.call('HSET', KEYS[2], gw, now + ttl)
else
  redis.call('HDEL', KEYS[1], gw)
  redis.call('HDEL', KEYS[2], gw)
end
local total = 0
local exp = redis.call('HGETALL', KEYS[2])
for i = 1, #exp, 2 do
  if tonumber(exp[i + 1]) < now then
    redis.call('HDEL', KEYS[1], exp[i])
    redis.call('HDEL', KEYS[2], exp[i])
  else
    total = total + tonumber(redis.call('HGET', KEYS[1], exp[i]) or '0')
  end
end
if KEYS[3] and total > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], total)
end
return total

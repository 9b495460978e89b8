-- Take one of a user's connection slots in a room, across every gateway, atomically.
--
-- KEYS[1]  sorted set: connection id -> expiry (ms)
-- ARGV[1]  this connection's id (gateway id + local number: unique)
-- ARGV[2]  now (ms)
-- ARGV[3]  ttl of the slot (ms); the owning gateway refreshes it while the connection lives
-- ARGV[4]  most slots the user may hold
--
-- Returns 1 when the slot is held (taking it again is a no-op, so a retry is safe), 0 when the
-- user is at the limit. Slots of a gateway that died expire after ttl: nothing leaks for good.
local now, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1

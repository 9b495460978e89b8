-- Open a scheduled sale, once: status scheduled -> open, stock published, `sale.started` in
-- history. A second caller (another process's scheduler) finds it open and does nothing.
-- KEYS[1] sale hash  KEYS[2] room stock hash  KEYS[3] room events stream
-- ARGV[1] the `sale.started` event (msgpack)  ARGV[2] events stream hard cap
if redis.call('HGET', KEYS[1], 'status') ~= 'scheduled' then return 0 end
local s = redis.call('HMGET', KEYS[1], 'id', 'left')
redis.call('HSET', KEYS[1], 'status', 'open')
redis.call('HSET', KEYS[2], s[1], s[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
return 1

-- End a sale, once (by time or by the host): status -> ended, stock withdrawn, `sale.ended`
-- with the final count in history; refs are kept ARGV[4] more seconds for late resends.
-- KEYS[1] sale hash  KEYS[2] room stock hash  KEYS[3] room events stream  KEYS[4] refs hash
-- ARGV[1] now (s)  ARGV[2] events stream hard cap  ARGV[3] ended_by  ARGV[4] refs ttl (s)
local s = redis.call('HMGET', KEYS[1], 'id', 'status', 'sold')
if not s[1] or s[2] == 'ended' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_by', ARGV[3])
redis.call('HDEL', KEYS[2], s[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e',
  cmsgpack.pack({type = 'sale.ended', sale = s[1], sold = tonumber(s[3]),
                 ts = tonumber(ARGV[1])}))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
return 1

-- Store a draw, once: drawing -> drawn, only for the caller holding the claim. The entrants
-- zset becomes one newline-joined string (far smaller for a million ids) and the working sets
-- are unlinked (freed off the main thread), so a drawn lottery keeps one copy of its entrants.
-- KEYS[1] lottery hash  KEYS[2] entrants zset  KEYS[3] likers set  KEYS[4] waiting set
-- KEYS[5] sorted entrants string  KEYS[6] room events stream
-- ARGV[1] claim token  ARGV[2] winners (JSON array)  ARGV[3] entrants count  ARGV[4] now (ms)
-- ARGV[5] sorted entrants, newline-joined  ARGV[6] `lottery.drawn` (msgpack)  ARGV[7] stream cap
-- ARGV[8] sha256 of ARGV[5]
-- The `lottery.drawn` event enters history here, with the result: once, whoever drew.
-- Returns 1 when stored, 0 when the claim was lost (another caller stored the same draw).
local s = redis.call('HMGET', KEYS[1], 'status', 'claim')
if s[1] ~= 'drawing' or s[2] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[5], ARGV[5])
redis.call('HSET', KEYS[1], 'status', 'drawn', 'winners', ARGV[2], 'entrants_count', ARGV[3],
           'drawn_at_ms', ARGV[4], 'entrants_sha256', ARGV[8])
redis.call('HDEL', KEYS[1], 'claim', 'drawing_until_ms')
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[6])
return 1

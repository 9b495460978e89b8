-- Store a draw, once: drawing -> drawn, only for the caller holding the claim. The drawer has
-- appended the sorted entrants, newline-joined, to its staged string page by page (far smaller
-- than the zset for a million ids); here it becomes the published list, and the working sets
-- are unlinked (freed off the main thread), so a drawn lottery keeps one copy of its entrants.
-- KEYS[1] lottery hash  KEYS[2] entrants zset  KEYS[3] likers set  KEYS[4] waiting set
-- KEYS[5] sorted entrants string  KEYS[6] room events stream  KEYS[7] this drawer's staged string
-- ARGV[1] claim token  ARGV[2] winners (JSON array)  ARGV[3] entrants count  ARGV[4] now (ms)
-- ARGV[5] `lottery.drawn` (msgpack)  ARGV[6] stream cap  ARGV[7] sha256 of the entrants string
-- The `lottery.drawn` event enters history here, with the result: once, whoever drew.
-- Returns 1 when stored, 0 when the claim was lost (another caller stored the same draw; the
-- staged string is dropped).
local s = redis.call('HMGET', KEYS[1], 'status', 'claim')
if s[1] ~= 'drawing' or s[2] ~= ARGV[1] then
  redis.call('UNLINK', KEYS[7])
  return 0
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('RENAME', KEYS[7], KEYS[5])
  redis.call('PERSIST', KEYS[5])
else
  redis.call('SET', KEYS[5], '')
end
redis.call('HSET', KEYS[1], 'status', 'drawn', 'winners', ARGV[2], 'entrants_count', ARGV[3],
           'drawn_at_ms', ARGV[4], 'entrants_sha256', ARGV[7])
redis.call('HDEL', KEYS[1], 'claim', 'drawing_until_ms')
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
return 1

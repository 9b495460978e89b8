-- Add one gateway's like and danmaku deltas to a room's totals, once per report.
--
-- KEYS[1]  the room's like total
-- KEYS[2]  the room's danmaku count
-- KEYS[3]  this gateway's last applied report number for the room
-- ARGV[1]  this report's number (increasing per gateway; a retry resends the same number)
-- ARGV[2]  like delta
-- ARGV[3]  danmaku delta
-- ARGV[4]  ttl of KEYS[3], seconds (longer than any retry)
--
-- A report whose number is not above the last applied one was applied already (redis-py
-- retried it after a timeout, or the gateway resent it after an error): it adds nothing.
-- Returns the like total.
local seq, likes, chats = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if (likes ~= 0 or chats ~= 0) and seq > tonumber(redis.call('GET', KEYS[3]) or '0') then
  if likes ~= 0 then redis.call('INCRBY', KEYS[1], likes) end
  if chats ~= 0 then redis.call('INCRBY', KEYS[2], chats) end
  redis.call('SET', KEYS[3], seq, 'EX', ARGV[4])
end
return tonumber(redis.call('GET', KEYS[1]) or '0')

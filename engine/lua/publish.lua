-- Append one history event to a room stream and trim what retention allows.
--
-- KEYS[1]  the room's event stream
-- KEYS[2]  (optional) the dedupe key of the op that publishes (room, user, ref)
-- ARGV[1]  the stored event (msgpack)
-- ARGV[2]  keep at least this many events ...
-- ARGV[3]  ... or this many seconds of events, whichever holds more
-- ARGV[4]  hard cap on the stream length (memory bound, wins over both)
-- ARGV[5]  (with KEYS[2]) how long the dedupe key lives, seconds
--
-- Returns {id, 1} for a new event. With a dedupe key, a second call (a client's resend, or
-- redis-py retrying after a timeout) returns {the first call's id, 0} and writes nothing: an
-- op publishes at most once.
-- An entry goes only when it is BOTH beyond the newest ARGV[2] entries AND older than
-- ARGV[3] seconds. Each call drops at most two such entries from the head, so trimming keeps
-- pace with appending at O(1) per call (XTRIM MAXLEN with an exact count of n-1 removes one).
-- Nothing is validated after a write: the only write that can fail is the XADD itself.
if KEYS[2] then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 0} end
end
local keep = tonumber(ARGV[2])
local keep_ms = tonumber(ARGV[3]) * 1000
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[1])
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'EX', ARGV[5])
end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - keep_ms
for _ = 1, 2 do
  local n = redis.call('XLEN', KEYS[1])
  if n <= keep then break end
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
  local ms = tonumber(string.match(first, '^(%d+)'))
  if ms >= cutoff then break end
  redis.call('XTRIM', KEYS[1], 'MAXLEN', n - 1)
end
return {id, 1}

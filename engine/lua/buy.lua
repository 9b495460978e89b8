-- One purchase attempt in a flash sale, atomically: idempotency, open window, per-user limit,
-- stock, tier price, then the order. Every check runs before the first write.
--
-- KEYS[1] sale hash        KEYS[2] bought hash (user -> qty)   KEYS[3] refs hash (user+ref -> answer)
-- KEYS[4] orders stream    KEYS[5] room stock hash             KEYS[6] room events stream
-- ARGV[1] user  ARGV[2] ref  ARGV[3] qty (1..)  ARGV[4] buyer's tier rank (-1: none, 0 normal,
-- 1 senior, 2 vip)  ARGV[5] now (ms)  ARGV[6] events stream hard cap  ARGV[7] refs ttl (s)
--
-- Answers are JSON: {"order": {...}} or {"error": code, "message": text}. Every answer but
-- "no such sale" is remembered under (user, ref): a resend, through any gateway, or a retry by
-- the Redis client, gets the same answer and never a second order.
local refkey = ARGV[1] .. '\n' .. ARGV[2]
local prev = redis.call('HGET', KEYS[3], refkey)
if prev then return prev end

local s = redis.call('HMGET', KEYS[1], 'id', 'status', 'starts_at_ms', 'ends_at_ms', 'left',
  'per_user_limit', 'price_cents', 'tier_prices')
if not s[1] then
  return cjson.encode({error = 'not_open', message = 'no such sale in this room'})
end
local function remember(answer)
  redis.call('HSET', KEYS[3], refkey, answer)
  return answer
end
local qty, now = tonumber(ARGV[3]), tonumber(ARGV[5])
local status, left = s[2], tonumber(s[5])
if status == 'ended' and left <= 0 then
  return remember(cjson.encode({error = 'sold_out', message = 'sold out'}))
end
if status ~= 'open' or now < tonumber(s[3]) or now >= tonumber(s[4]) then
  return remember(cjson.encode({error = 'not_open', message = 'this sale is not open'}))
end
local bought = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if bought + qty > tonumber(s[6]) then
  return remember(cjson.encode({error = 'limit_reached',
    message = 'at most ' .. s[6] .. ' per buyer; you have ' .. bought}))
end
if left < qty then
  if left <= 0 then
    return remember(cjson.encode({error = 'sold_out', message = 'sold out'}))
  end
  return remember(cjson.encode({error = 'sold_out', message = 'only ' .. left .. ' left'}))
end
-- The lowest price the buyer's tier allows: the base price, or any tier price at or below it.
local unit = tonumber(s[7])
local tiers = cjson.decode(s[8])
local names = {'normal', 'senior', 'vip'}
for i = 1, tonumber(ARGV[4]) + 1 do
  local p = tiers[names[i]]
  if p and p < unit then unit = p end
end

-- Writes: nothing below can fail on bad input.
local total = qty * unit
left = redis.call('HINCRBY', KEYS[1], 'left', -qty)
redis.call('HINCRBY', KEYS[1], 'sold', qty)
redis.call('HINCRBY', KEYS[1], 'revenue', total)
if bought == 0 then redis.call('HINCRBY', KEYS[1], 'buyers', 1) end
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
local oid = redis.call('XADD', KEYS[4], '*', 'user', ARGV[1], 'ref', ARGV[2], 'qty', qty,
  'unit', unit, 'total', total, 'ts', now)
local answer = remember(cjson.encode({order = {id = oid, sale = s[1], qty = qty,
  unit_price_cents = unit, total_cents = total}}))
if left > 0 then
  redis.call('HSET', KEYS[5], s[1], left)
else
  -- Sold out: the sale ends here, once, with both history events.
  redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_by', 'soldout')
  redis.call('HDEL', KEYS[5], s[1])
  local sold = tonumber(redis.call('HGET', KEYS[1], 'sold'))
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'e',
    cmsgpack.pack({type = 'sale.soldout', sale = s[1], ts = now / 1000}))
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'e',
    cmsgpack.pack({type = 'sale.ended', sale = s[1], sold = sold, ts = now / 1000}))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
end
return answer

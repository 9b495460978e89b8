-- Prepended to every write script a client waits on (engine/scripts.py, `GuardedScript`).
--
-- The LAST ARGV is a deadline in milliseconds of the Unix epoch. Redis may run a call long
-- after it was sent: a stalled Redis (paused, swapping, a slow disk) keeps the commands queued
-- in its socket and runs them when it wakes, after the caller has timed out and told its client
-- `unavailable`. A call that starts after its deadline therefore does nothing and answers LATE,
-- so `unavailable` never hides a write that happens later. The deadline is removed from ARGV
-- here: the script below sees exactly the ARGV it documents.
local lr_deadline = tonumber(table.remove(ARGV))
local lr_now = redis.call('TIME')
if lr_deadline == nil
  or tonumber(lr_now[1]) * 1000 + math.floor(tonumber(lr_now[2]) / 1000) > lr_deadline then
  return redis.error_reply('LATE the write reached Redis after its deadline; nothing was done')
end

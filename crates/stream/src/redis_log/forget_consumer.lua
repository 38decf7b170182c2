-- Deletes consumer ARGV[2] from group ARGV[1] of stream KEYS[1] if, and
-- only if, it holds no pending entry: checked and done in one step, so an
-- entry delivered to it meanwhile can never be dropped with it.
-- Returns 1 when deleted, 0 when it holds entries (or is not there).
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 0
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) == 0 and 1 or 0

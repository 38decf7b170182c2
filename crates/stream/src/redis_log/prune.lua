-- Removes the members of sorted set KEYS[1] scored below ARGV[1] (a
-- ZRANGEBYSCORE bound such as '(1700000000000') and their records: the
-- fields of the same names in the container hash KEYS[2]; increments the
-- version of the partition's aggregates KEYS[3] (see apply.lua) when it
-- removed any.
-- Returns how many members were removed.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
-- Lua's unpack takes a few thousand values at most: in chunks.
for from = 1, #gone, 1000 do
  local to = math.min(from + 999, #gone)
  redis.call('ZREM', KEYS[1], unpack(gone, from, to))
  redis.call('HDEL', KEYS[2], unpack(gone, from, to))
end
if #gone > 0 then
  redis.call('INCR', KEYS[3])
end
return #gone

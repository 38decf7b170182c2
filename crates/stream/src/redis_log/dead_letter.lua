-- Moves one entry to the dead-letter stream and acks it, atomically.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] stats
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] events, ARGV[4] reason,
-- ARGV[5] dead-letter stream max length (approximate)
-- Returns 1 when moved, 0 when the entry was already acked.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local body = {'source_id', ARGV[2], 'reason', ARGV[4]}
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if found[1] then
  for _, v in ipairs(found[1][2]) do
    body[#body + 1] = v
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(body))
redis.call('HINCRBY', KEYS[3], 'dead_lettered', ARGV[3])
return 1

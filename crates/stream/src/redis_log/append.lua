-- Appends one batch of events to a partition, minus duplicates, atomically.
-- KEYS[1] stream, KEYS[2] recent ids (hash), KEYS[3] recent id order (list),
-- KEYS[4] stats (hash)
-- ARGV[1] dedupe window (ids remembered), ARGV[2] entry meta,
-- ARGV[3..] pairs of (event_id, event bytes)
-- Returns {entry id or false, {duplicate positions (0-based)}}.
local window = tonumber(ARGV[1])
local fields = {'m', ARGV[2]}
local dups = {}
local fresh = 0
local n = (#ARGV - 2) / 2
for j = 0, n - 1 do
  local id = ARGV[3 + 2 * j]
  if redis.call('HSETNX', KEYS[2], id, 1) == 1 then
    redis.call('RPUSH', KEYS[3], id)
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = ARGV[4 + 2 * j]
    fresh = fresh + 1
  else
    dups[#dups + 1] = j
  end
end
local excess = redis.call('LLEN', KEYS[3]) - window
if excess > 0 then
  local old = redis.call('LPOP', KEYS[3], excess)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[2], id)
  end
end
local entry = false
if fresh > 0 then
  entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
  redis.call('HINCRBY', KEYS[4], 'ingested', fresh)
end
if #dups > 0 then
  redis.call('HINCRBY', KEYS[4], 'duplicates', #dups)
end
return {entry, dups}

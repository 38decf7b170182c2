-- Appends one batch of events to a partition, minus duplicates, atomically.
-- KEYS[1] stream, KEYS[2] recent ids (hash), KEYS[3] recent id order (list),
-- KEYS[4] stats (hash)
-- ARGV[1] dedupe window (ids remembered), ARGV[2] entry meta,
-- ARGV[3..] pairs of (event_id, event bytes)
-- Returns {entry id or false, {duplicate positions (0-based)}}.
--
-- Order matters because Redis does not roll a script back on error: reads
-- first, then the XADD (the step that can fail, e.g. on a wrong key type),
-- and only then the dedupe bookkeeping, so a failed append never leaves
-- ids marked as seen that a retry would then drop.
local window = tonumber(ARGV[1])
local fields = {'m', ARGV[2]}
local fresh_ids = {}
local seen_here = {}
local dups = {}
local n = (#ARGV - 2) / 2
for j = 0, n - 1 do
  local id = ARGV[3 + 2 * j]
  if seen_here[id] or redis.call('HEXISTS', KEYS[2], id) == 1 then
    dups[#dups + 1] = j
  else
    seen_here[id] = true
    fresh_ids[#fresh_ids + 1] = id
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = ARGV[4 + 2 * j]
  end
end
local entry = false
if #fresh_ids > 0 then
  entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
  for _, id in ipairs(fresh_ids) do
    redis.call('HSET', KEYS[2], id, 1)
  end
  redis.call('RPUSH', KEYS[3], unpack(fresh_ids))
  redis.call('HINCRBY', KEYS[4], 'ingested', #fresh_ids)
  local excess = redis.call('LLEN', KEYS[3]) - window
  if excess > 0 then
    local old = redis.call('LPOP', KEYS[3], excess)
    redis.call('HDEL', KEYS[2], unpack(old))
  end
end
if #dups > 0 then
  redis.call('HINCRBY', KEYS[4], 'duplicates', #dups)
end
return {entry, dups}

-- Appends one batch of events to a partition, minus duplicates, atomically.
-- KEYS[1] stream, KEYS[2] recent ids (hash), KEYS[3] recent id order (list),
-- KEYS[4] stats (hash), KEYS[5..] run ledgers of the batch's events
-- ARGV[1] dedupe window (ids remembered), ARGV[2] entry meta,
-- ARGV[3] run ledger time to live (seconds),
-- ARGV[4] the events: each length-delimited (protobuf `repeated bytes`),
-- ARGV[5] the settings epoch the caller checked (settings.rs): when the
-- partition's differs, nothing is written and the error EPOCH is returned,
-- ARGV[6..] pairs of (event_id, run ledger index into KEYS or 0)
-- The entry holds the meta (field m), the blob (b) and, when some events
-- were duplicates, their positions (d, comma-separated, 0-based): readers
-- skip those. Duplicates are rare (retries), so the blob is never rebuilt.
-- Returns {entry id or false, {duplicate positions (0-based)}, backlog}:
-- the backlog (ingested - processed - dead-lettered) after the append, so
-- ingest's backpressure check needs no read of its own while it appends.
--
-- Order matters because Redis does not roll a script back on error: reads
-- first, then the XADD (the step that can fail, e.g. on a wrong key type),
-- and only then the dedupe bookkeeping, so a failed append never leaves
-- ids marked as seen that a retry would then drop.
if redis.call('HGET', KEYS[4], 'epoch') ~= ARGV[5] then
  return redis.error_reply('EPOCH the settings were recorded again since this process read them')
end
local window = tonumber(ARGV[1])
local n = (#ARGV - 5) / 2
-- Lua's unpack takes a few thousand values at most: bulk calls go in chunks.
local CHUNK = 1000
local function chunked(command, key, list, pairs_of)
  local out = {}
  for from = 1, #list, CHUNK do
    local to = math.min(from + CHUNK - 1, #list)
    local args = {}
    for j = from, to do
      args[#args + 1] = list[j]
      if pairs_of then
        args[#args + 1] = pairs_of
      end
    end
    local reply = redis.call(command, key, unpack(args))
    if type(reply) == 'table' then
      for _, v in ipairs(reply) do
        out[#out + 1] = v
      end
    end
  end
  return out
end

local ids = {}
for j = 0, n - 1 do
  ids[j + 1] = ARGV[6 + 2 * j]
end
local known = chunked('HMGET', KEYS[2], ids)
local fresh_ids = {}
local seen_here = {}
local dups = {}
local run_dups = {}
for j = 0, n - 1 do
  local id = ids[j + 1]
  if seen_here[id] or known[j + 1] then
    dups[#dups + 1] = j
    local run = tonumber(ARGV[7 + 2 * j])
    if run > 0 then
      run_dups[run] = (run_dups[run] or 0) + 1
    end
  else
    seen_here[id] = true
    fresh_ids[#fresh_ids + 1] = id
  end
end
local entry = false
if #fresh_ids > 0 then
  if #dups > 0 then
    entry = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'b', ARGV[4], 'd', table.concat(dups, ','))
  else
    entry = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'b', ARGV[4])
  end
  chunked('HSET', KEYS[2], fresh_ids, 1)
  chunked('RPUSH', KEYS[3], fresh_ids)
  redis.call('HINCRBY', KEYS[4], 'ingested', #fresh_ids)
  local excess = redis.call('LLEN', KEYS[3]) - window
  if excess > 0 then
    local old = redis.call('LPOP', KEYS[3], excess)
    chunked('HDEL', KEYS[2], old)
  end
end
if #dups > 0 then
  redis.call('HINCRBY', KEYS[4], 'duplicates', #dups)
  for run, count in pairs(run_dups) do
    redis.call('HINCRBY', KEYS[run], 'duplicates', count)
    redis.call('EXPIRE', KEYS[run], ARGV[3])
  end
end
local f = redis.call('HMGET', KEYS[4], 'ingested', 'processed', 'dead_lettered')
local backlog = (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0) - (tonumber(f[3]) or 0)
return {entry, dups, backlog}

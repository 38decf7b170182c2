-- The bookkeeping of one batch of an idempotent producer appended to a
-- partition, deduplicated by the producer's batch sequence instead of by
-- event id (Kafka's idempotent-producer scheme), so the cost is per batch.
--
-- It runs first in a MULTI: this script, then the XADD of the batch's
-- entry, then append_finish.lua, which undoes that XADD unless this script
-- marked the sequence as appended (the decision key holds the batch's
-- token). The events never pass through Lua: Redis' Lua hashes every byte
-- of every string it is given, which for a blob of events cost more than
-- the XADD itself (bench/README.md, session 9).
--
-- KEYS[1] stats (hash), KEYS[2] producer state (hash: hi, the newest
-- sequence appended), KEYS[3] producer window (bitmap: bit `sequence mod
-- window` is set once that sequence was appended), KEYS[4] decision (the
-- token of the batch whose XADD stays), KEYS[5..] run ledgers of the
-- batch's events
-- ARGV[1] window (bits, a multiple of 8), ARGV[2] sequence (1..2^53-1),
-- ARGV[3] token of this batch, ARGV[4] time to live (seconds) of the
-- producer state and run ledgers, ARGV[5] events in the entry the XADD
-- adds (0: no XADD follows), ARGV[6] events of the request left out of the
-- entry as repeats of an id earlier in the batch, ARGV[7] the settings
-- epoch the caller checked (settings.rs), ARGV[8..] triples (run ledger
-- index into KEYS, events of that run in the entry, its repeats left out)
-- Returns {state, newest sequence or '', backlog}: state 0 appended, 1
-- the sequence was already appended (nothing changes but the duplicate
-- counters; the XADD is undone), 2 the sequence is older than the window
-- (nothing changes; whether it was appended cannot be told). The backlog
-- (ingested - processed - dead-lettered) is the partition's after the
-- call, for ingest's backpressure check (0 with state 2). State 3: the
-- partition's settings epoch is not ARGV[7]; nothing changes (the XADD is
-- undone) and the caller reads the settings record again.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[7] then
  return {3, '', 0}
end
local window = tonumber(ARGV[1])
local seq = tonumber(ARGV[2])
local ttl = ARGV[4]
local fresh = tonumber(ARGV[5])
local hi_text = redis.call('HGET', KEYS[2], 'hi')
local hi = tonumber(hi_text)

local function backlog()
  local f = redis.call('HMGET', KEYS[1], 'ingested', 'processed', 'dead_lettered')
  return (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0) - (tonumber(f[3]) or 0)
end

local function count_duplicates(total, of_run)
  if total > 0 then
    redis.call('HINCRBY', KEYS[1], 'duplicates', total)
  end
  for i = 8, #ARGV, 3 do
    local d = of_run(i)
    if d > 0 then
      local key = KEYS[tonumber(ARGV[i])]
      redis.call('HINCRBY', key, 'duplicates', d)
      redis.call('EXPIRE', key, ttl)
    end
  end
end

if hi ~= nil then
  if seq <= hi - window then
    return {2, hi_text, 0}
  end
  if seq <= hi and redis.call('GETBIT', KEYS[3], seq % window) == 1 then
    count_duplicates(fresh + tonumber(ARGV[6]), function(i)
      return tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2])
    end)
    return {1, '', backlog()}
  end
end

-- Bits [from, to] of the window cleared: SETBIT at the edges, SETRANGE of
-- zero bytes between, so a jump of thousands of sequences costs a few calls.
local function clear(from, to)
  while from <= to and from % 8 ~= 0 do
    redis.call('SETBIT', KEYS[3], from, 0)
    from = from + 1
  end
  while to >= from and to % 8 ~= 7 do
    redis.call('SETBIT', KEYS[3], to, 0)
    to = to - 1
  end
  if from <= to then
    redis.call('SETRANGE', KEYS[3], from / 8, string.rep('\0', (to - from + 1) / 8))
  end
end

if hi == nil or seq - hi >= window then
  -- A new producer, or a jump past the whole window: nothing in it is seen.
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'hi', ARGV[2])
elseif seq > hi then
  -- The window slides: the slots of sequences hi+1 .. seq-1 held sequences
  -- now older than the window; they are not seen yet.
  if seq - hi > 1 then
    local a, b = (hi + 1) % window, (seq - 1) % window
    if a <= b then
      clear(a, b)
    else
      clear(a, window - 1)
      clear(0, b)
    end
  end
  redis.call('HSET', KEYS[2], 'hi', ARGV[2])
end
-- Marked as appended, and (in the same step, nothing can fail between)
-- the XADD that follows is kept.
redis.call('SETBIT', KEYS[3], seq % window, 1)
if fresh > 0 then
  redis.call('SET', KEYS[4], ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'ingested', fresh)
end
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)

count_duplicates(tonumber(ARGV[6]), function(i)
  return tonumber(ARGV[i + 2])
end)
return {0, '', backlog()}

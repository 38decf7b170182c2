-- Appends one batch of an idempotent producer to a partition, atomically,
-- deduplicated by the producer's batch sequence instead of by event id
-- (Kafka's idempotent-producer scheme), so the cost is per batch.
-- KEYS[1] stream, KEYS[2] stats (hash), KEYS[3] producer state (hash: hi,
-- the newest sequence appended), KEYS[4] producer window (bitmap: bit
-- `sequence mod window` is set once that sequence was appended),
-- KEYS[5..] run ledgers of the batch's events
-- ARGV[1] window (bits, a multiple of 8), ARGV[2] sequence (1..2^53-1),
-- ARGV[3] entry meta, ARGV[4] time to live (seconds) of the producer state
-- and run ledgers, ARGV[5] the events (one blob, each length-delimited),
-- ARGV[6] events in the blob, ARGV[7] events of the request left out of the
-- blob as repeats of an id earlier in the batch,
-- ARGV[8..] triples (run ledger index into KEYS, events of that run in the
-- blob, its repeats left out)
-- Returns {entry id or false, state, newest sequence or '', backlog}:
-- state 0 appended, 1 the sequence was already appended (nothing changes
-- but the duplicate counters), 2 the sequence is older than the window
-- (nothing changes; whether it was appended cannot be told). The backlog
-- (ingested - processed - dead-lettered) is the partition's after the
-- call, for ingest's backpressure check (0 with state 2).
--
-- Reads first, then the XADD (the step that can fail), then the window
-- bookkeeping, so a failed append never marks a sequence as seen.
local window = tonumber(ARGV[1])
local seq = tonumber(ARGV[2])
local ttl = ARGV[4]
local hi_text = redis.call('HGET', KEYS[3], 'hi')
local hi = tonumber(hi_text)

local function backlog()
  local f = redis.call('HMGET', KEYS[2], 'ingested', 'processed', 'dead_lettered')
  return (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0) - (tonumber(f[3]) or 0)
end

local function count_duplicates(total, of_run)
  if total > 0 then
    redis.call('HINCRBY', KEYS[2], 'duplicates', total)
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
    return {false, 2, hi_text, 0}
  end
  if seq <= hi and redis.call('GETBIT', KEYS[4], seq % window) == 1 then
    count_duplicates(tonumber(ARGV[6]) + tonumber(ARGV[7]), function(i)
      return tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2])
    end)
    return {false, 1, '', backlog()}
  end
end

local entry = false
local fresh = tonumber(ARGV[6])
if fresh > 0 then
  entry = redis.call('XADD', KEYS[1], '*', 'm', ARGV[3], 'b', ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'ingested', fresh)
end

-- Bits [from, to] of the window cleared: SETBIT at the edges, SETRANGE of
-- zero bytes between, so a jump of thousands of sequences costs a few calls.
local function clear(from, to)
  while from <= to and from % 8 ~= 0 do
    redis.call('SETBIT', KEYS[4], from, 0)
    from = from + 1
  end
  while to >= from and to % 8 ~= 7 do
    redis.call('SETBIT', KEYS[4], to, 0)
    to = to - 1
  end
  if from <= to then
    redis.call('SETRANGE', KEYS[4], from / 8, string.rep('\0', (to - from + 1) / 8))
  end
end

if hi == nil or seq - hi >= window then
  -- A new producer, or a jump past the whole window: nothing in it is seen.
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[3], 'hi', ARGV[2])
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
  redis.call('HSET', KEYS[3], 'hi', ARGV[2])
end
redis.call('SETBIT', KEYS[4], seq % window, 1)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[4], ttl)

count_duplicates(tonumber(ARGV[7]), function(i)
  return tonumber(ARGV[i + 2])
end)
return {entry, 0, '', backlog()}

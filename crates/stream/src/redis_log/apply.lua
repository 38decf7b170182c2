-- Acks one entry and applies its writes, atomically: the exactly-once step.
-- An entry no longer pending (already acked by this or another consumer)
-- changes nothing. In dead-letter mode the entry is copied to the
-- dead-letter stream with the reason instead of being counted processed.
-- KEYS[1] stream, KEYS[2] stats, KEYS[3] dead-letter stream,
-- KEYS[4..] aggregate keys
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] events in the entry,
-- ARGV[4] dead-letter reason ('' = a normal apply),
-- ARGV[5] dead-letter stream max length (approximate),
-- ARGV[6] number n of e2e histograms, then n pairs (key index into KEYS,
-- events to count), then writes as quadruples (op, key index, field or
-- member, value).
-- Returns 1 when applied, 0 when the entry was already acked.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local events = tonumber(ARGV[3])
local reason = ARGV[4]
if reason ~= '' then
  local body = {'source_id', ARGV[2], 'reason', reason}
  local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if found[1] then
    for _, v in ipairs(found[1][2]) do
      body[#body + 1] = v
    end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(body))
  redis.call('HINCRBY', KEYS[2], 'dead_lettered', events)
else
  redis.call('HINCRBY', KEYS[2], 'processed', events)
end
local histograms = tonumber(ARGV[6])
local i = 7
if histograms > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local appended_ms = tonumber(string.match(ARGV[2], '^(%d+)'))
  local latency = math.max(now_ms - appended_ms, 0)
  -- Same buckets as latency_bucket() in model.rs: four per doubling.
  local bucket = math.floor(4 * math.log(1 + latency) / math.log(2))
  for _ = 1, histograms do
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], bucket, ARGV[i + 1])
    i = i + 2
  end
end
while i <= #ARGV do
  local op, key, field, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'I' then
    redis.call('HINCRBY', key, field, value)
  elseif op == 'F' then
    redis.call('HINCRBYFLOAT', key, field, value)
  elseif op == 'm' or op == 'M' then
    local current = tonumber(redis.call('HGET', key, field))
    local v = tonumber(value)
    if current == nil or (op == 'm' and v < current) or (op == 'M' and v > current) then
      redis.call('HSET', key, field, value)
    end
  elseif op == 'S' then
    redis.call('HSET', key, field, value)
  elseif op == 'Z' then
    redis.call('ZINCRBY', key, value, field)
  elseif op == 'X' then
    redis.call('ZADD', key, 'GT', value, field)
  elseif op == 'E' then
    redis.call('EXPIRE', key, value)
  else
    return redis.error_reply('unknown aggregate op ' .. tostring(op))
  end
  i = i + 4
end
return 1

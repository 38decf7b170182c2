-- Acks a batch of entries of one partition and applies their writes,
-- atomically: the exactly-once step. If any entry of the batch is no longer
-- pending (already acked by this or another consumer), nothing changes and
-- the script answers which ones, so the caller folds the rest again. In
-- dead-letter mode the entries are copied to the dead-letter stream with
-- the reason instead of being counted processed.
--
-- KEYS[1] stream, KEYS[2] stats, KEYS[3] dead-letter stream, KEYS[4] the
-- version of the partition's aggregates (a counter every apply and prune
-- increments), KEYS[5..] the aggregate keys and record containers the
-- groups and histogram increments below name (only those: a record key is
-- written through its container and is not named)
-- ARGV[1] group, ARGV[2] number n of entries, ARGV[3] events in the
-- entries, ARGV[4] dead-letter reason ('' = a normal apply),
-- ARGV[5] dead-letter stream max length (approximate),
-- ARGV[6] the version the caller read its values at ('*' = any: nothing
-- was read outside this script), ARGV[7 .. 6+n] the entry ids,
-- then h, the number of e2e histogram increments, and h triples (key index
-- into KEYS, entry number 1..n, events to count),
-- then groups of writes, one key each: (key index, kind 'H' hash or
-- 'Z' sorted set, number f of writes, seconds to live or 0, the f ops as
-- one string of letters), then the f fields or members, then the f values.
-- No field appears twice in one group.
-- Groups of kind 'h' (hash) and 'z' (sorted set) hold values the caller
-- already merged with what it read at version ARGV[6]: (key index, kind,
-- number f of pairs, seconds to live or 0), then f (field, value) pairs
-- ('h') or (score, member) pairs ('z'), written as they are.
-- A group of kind 'R' writes records of one container hash instead (see
-- keys.rs: each record is one field of the container, a MessagePack map
-- of the record's fields): (container key index, 'R', number r of records,
-- seconds to live or 0), then per record (its name, number f of writes, the
-- f ops as letters, the f fields, the f values). No record appears twice
-- in one group, nor a field twice in one record.
-- Returns {1} when applied, {0, i, j, ...}: the entry numbers (1..n)
-- that were no longer pending, or {2} when the version is no longer
-- ARGV[6]; in both refusals nothing was changed.
--
-- Every group costs a fixed three calls whatever its number of writes:
-- one read of every field (HMGET / ZMSCORE), the merge here, one write of
-- every field (HSET / ZADD), one EXPIRE. That keeps a fold of thousands of
-- events to a few calls per distinct key.
local n = tonumber(ARGV[2])
local ids = {}
for e = 1, n do
  ids[e] = ARGV[6 + e]
end

-- Values merged by the caller are only right if nothing was written since
-- it read them.
if ARGV[6] ~= '*' and (redis.call('GET', KEYS[4]) or '0') ~= ARGV[6] then
  return {2}
end

-- Still pending (for anyone)? One XPENDING per entry: entries carry many
-- events, so this is a small cost per event.
local missing = {0}
for e = 1, n do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ids[e], ids[e], 1) == 0 then
    missing[#missing + 1] = e
  end
end
if #missing > 1 then
  return missing
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, 1, n))
redis.call('INCR', KEYS[4])

local events = tonumber(ARGV[3])
local reason = ARGV[4]
if reason ~= '' then
  for e = 1, n do
    local body = {'source_id', ids[e], 'reason', reason}
    local found = redis.call('XRANGE', KEYS[1], ids[e], ids[e])
    if found[1] then
      for _, v in ipairs(found[1][2]) do
        body[#body + 1] = v
      end
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(body))
  end
  redis.call('HINCRBY', KEYS[2], 'dead_lettered', events)
else
  redis.call('HINCRBY', KEYS[2], 'processed', events)
end

local i = 7 + n
local histograms = tonumber(ARGV[i])
i = i + 1
if histograms > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- Same buckets as latency_bucket() in model.rs: four per doubling.
  local buckets = {}
  for e = 1, n do
    local latency = math.max(now_ms - tonumber(string.match(ids[e], '^(%d+)')), 0)
    buckets[e] = math.floor(4 * math.log(1 + latency) / math.log(2))
  end
  local sums = {}
  local order = {}
  for _ = 1, histograms do
    local slot = ARGV[i] .. ' ' .. buckets[tonumber(ARGV[i + 1])]
    if not sums[slot] then
      sums[slot] = 0
      order[#order + 1] = slot
    end
    sums[slot] = sums[slot] + tonumber(ARGV[i + 2])
    i = i + 3
  end
  for _, slot in ipairs(order) do
    local key, bucket = string.match(slot, '^(%d+) (%d+)$')
    redis.call('HINCRBY', KEYS[tonumber(key)], bucket, sums[slot])
  end
end

-- Numbers are written so that they read back as the same double: whole
-- numbers (exact below 2^53) in full, others as %.17g. ('%d' would be a
-- 32-bit long on armv7 builds of Redis.)
local function number(v)
  if v == math.floor(v) and math.abs(v) < 9007199254740992 then
    return string.format('%.0f', v)
  end
  return string.format('%.17g', v)
end

-- The records group at ARGV[i] of `container`: one HMGET of every
-- record, the merges on Lua tables (numbers stay numbers: no parsing or
-- formatting per field), one HSET. Returns the index past the group.
local function apply_records(container, i)
  local r = tonumber(ARGV[i + 2])
  local ttl = tonumber(ARGV[i + 3])
  local names, starts = {}, {}
  local j = i + 4
  for x = 1, r do
    names[x] = ARGV[j]
    starts[x] = j
    j = j + 3 + 2 * tonumber(ARGV[j + 1])
  end
  if r > 0 then
    local current = redis.call('HMGET', container, unpack(names))
    local out = {}
    for x = 1, r do
      local s = starts[x]
      local f = tonumber(ARGV[s + 1])
      local ops = ARGV[s + 2]
      local rec = {}
      if current[x] then
        local ok, t = pcall(cmsgpack.unpack, current[x])
        if ok and type(t) == 'table' then rec = t end
      end
      for y = 0, f - 1 do
        local op = string.byte(ops, y + 1)
        local name = ARGV[s + 3 + y]
        local v = ARGV[s + 3 + f + y]
        local old = rec[name]
        if op == 73 or op == 70 then -- I, F: add
          rec[name] = (tonumber(old) or 0) + tonumber(v)
        elseif op == 109 then -- m: keep the minimum
          local n = tonumber(v)
          if type(old) ~= 'number' or n < old then rec[name] = n end
        elseif op == 77 then -- M: keep the maximum
          local n = tonumber(v)
          if type(old) ~= 'number' or n > old then rec[name] = n end
        elseif op == 83 then -- S: set
          rec[name] = v
        elseif op == 85 then -- U: a summary {count, sum, min, max}
          local d = cmsgpack.unpack(v)
          if type(old) == 'table' and #old == 4 then
            d = {old[1] + d[1], old[2] + d[2], math.min(old[3], d[3]), math.max(old[4], d[4])}
          end
          rec[name] = d
        else
          return redis.error_reply('unknown record op ' .. tostring(op))
        end
      end
      out[2 * x - 1] = names[x]
      out[2 * x] = cmsgpack.pack(rec)
    end
    redis.call('HSET', container, unpack(out))
  end
  if ttl > 0 then
    redis.call('EXPIRE', container, ttl)
  end
  return j
end

-- The hash or sorted-set group at ARGV[i] of `key`. Returns the index
-- past the group.
local function apply_group(key, kind, i)
  local f = tonumber(ARGV[i + 2])
  local ttl = tonumber(ARGV[i + 3])
  local ops = ARGV[i + 4]
  local first_name = i + 5
  local first_value = first_name + f
  if kind ~= 'H' and kind ~= 'Z' then
    return redis.error_reply('unknown aggregate kind ' .. tostring(kind))
  end
  if f > 0 then
    -- Names are contiguous arguments: the read takes them as they are.
    local current
    if kind == 'H' then
      current = redis.call('HMGET', key, unpack(ARGV, first_name, first_value - 1))
    else
      current = redis.call('ZMSCORE', key, unpack(ARGV, first_name, first_value - 1))
    end
    -- A group never names a field twice (the caller splits it), so each
    -- write merges with the value read.
    local out = {}
    for j = 0, f - 1 do
      local op = string.byte(ops, j + 1)
      local v = ARGV[first_value + j]
      local old = current[j + 1]
      local new
      if op == 73 or op == 70 or op == 90 then -- I, F, Z: add
        new = number((tonumber(old) or 0) + tonumber(v))
      elseif op == 109 then -- m: keep the minimum
        local o = tonumber(old)
        if o ~= nil and o <= tonumber(v) then new = old else new = v end
      elseif op == 77 or op == 88 then -- M, X: keep the maximum
        local o = tonumber(old)
        if o ~= nil and o >= tonumber(v) then new = old else new = v end
      elseif op == 83 then -- S: set
        new = v
      elseif op == 85 then -- U: a summary {count, sum, min, max}, MessagePack
        -- unpacked and packed in C, so one field costs about one counter.
        local d = cmsgpack.unpack(v)
        local b = nil
        if old then
          local ok, t = pcall(cmsgpack.unpack, old)
          if ok and type(t) == 'table' and #t == 4 then b = t end
        end
        if b then
          d = {b[1] + d[1], b[2] + d[2], math.min(b[3], d[3]), math.max(b[4], d[4])}
        end
        new = cmsgpack.pack(d)
      else
        return redis.error_reply('unknown aggregate op ' .. tostring(op))
      end
      if kind == 'H' then
        out[2 * j + 1] = ARGV[first_name + j]
        out[2 * j + 2] = new
      else
        out[2 * j + 1] = new
        out[2 * j + 2] = ARGV[first_name + j]
      end
    end
    if kind == 'H' then
      redis.call('HSET', key, unpack(out))
    else
      redis.call('ZADD', key, unpack(out))
    end
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  return first_value + f
end

-- A group of values merged by the caller at ARGV[i] of `key`, written as
-- they are. Returns the index past the group.
local function write_group(key, kind, i)
  local f = tonumber(ARGV[i + 2])
  local ttl = tonumber(ARGV[i + 3])
  if f > 0 then
    redis.call(kind == 'h' and 'HSET' or 'ZADD', key, unpack(ARGV, i + 4, i + 3 + 2 * f))
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  return i + 4 + 2 * f
end

local last = #ARGV
while i <= last do
  local key = KEYS[tonumber(ARGV[i])]
  local kind = ARGV[i + 1]
  local next_i
  if kind == 'R' then
    next_i = apply_records(key, i)
  elseif kind == 'h' or kind == 'z' then
    next_i = write_group(key, kind, i)
  else
    next_i = apply_group(key, kind, i)
  end
  if type(next_i) == 'table' then
    return next_i
  end
  i = next_i
end
return {1}

-- Removes up to ARGV[2] members of sorted set KEYS[1] scored below ARGV[1]
-- (a ZRANGEBYSCORE bound such as '(1700000000000'), lowest first, with
-- their records (the fields of the same names in the container hash
-- KEYS[2]), their membership of the id index KEYS[4], and of the postings
-- of each label pair their record holds under field ARGV[3] (a JSON
-- object of strings): ARGV[4] .. hex(key) .. '/' .. hex(value), keys of
-- the same partition, hence of this slot (keys.rs, `label_devices`);
-- increments the version of the partition's aggregates KEYS[3] (see
-- apply.lua) when it removed any. The LIMIT bounds the time this holds
-- Redis whatever the index holds: a caller with more to prune calls again.
-- Returns how many members were removed.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local function hex(text)
  return (string.gsub(text, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
-- Lua's unpack takes a few thousand values at most: in chunks.
for from = 1, #gone, 1000 do
  local to = math.min(from + 999, #gone)
  local records = redis.call('HMGET', KEYS[2], unpack(gone, from, to))
  for i = from, to do
    local packed = records[i - from + 1]
    if packed then
      local ok, record = pcall(cmsgpack.unpack, packed)
      local json = ok and type(record) == 'table' and record[ARGV[3]]
      if type(json) == 'string' then
        local parsed, labels = pcall(cjson.decode, json)
        if parsed and type(labels) == 'table' then
          for k, v in pairs(labels) do
            if type(k) == 'string' and type(v) == 'string' then
              redis.call('ZREM', ARGV[4] .. hex(k) .. '/' .. hex(v), gone[i])
            end
          end
        end
      end
    end
  end
  redis.call('ZREM', KEYS[1], unpack(gone, from, to))
  redis.call('ZREM', KEYS[4], unpack(gone, from, to))
  redis.call('HDEL', KEYS[2], unpack(gone, from, to))
end
if #gone > 0 then
  redis.call('INCR', KEYS[3])
end
return #gone

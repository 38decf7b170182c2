-- Admits devices to a partition's tracked devices under a cap, atomically
-- (ingest's protection against a client inventing device ids without end).
--
-- KEYS[1] the partition's admitted devices (sorted set: id -> Unix ms last
-- admitted)
-- ARGV[1] cap, ARGV[2] now (Unix ms), ARGV[3] horizon (Unix ms: devices
-- last admitted before it have expired), ARGV[4] how many expired devices
-- this call removes at most, ARGV[5..] distinct device ids
-- Returns, per device in order, 1 when admitted (already tracked, or new
-- while fewer than the cap are), 0 when refused.
--
-- Expired devices leave a bounded number per call, so no call costs in
-- proportion to the fleet; a device expired but not removed yet is still
-- tracked (and refreshed when it comes back).
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local now = ARGV[2]
local expired = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. ARGV[3],
  'LIMIT', 0, tonumber(ARGV[4]))
if #expired > 0 then
  redis.call('ZREM', key, unpack(expired))
end
local tracked = redis.call('ZCARD', key)
local out = {}
for i = 5, #ARGV do
  local device = ARGV[i]
  if redis.call('ZSCORE', key, device) then
    redis.call('ZADD', key, now, device)
    out[#out + 1] = 1
  elseif tracked < cap then
    redis.call('ZADD', key, now, device)
    tracked = tracked + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

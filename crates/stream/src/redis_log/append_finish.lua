-- Runs right after the XADD of an idempotent producer's batch, in the same
-- MULTI as append_producer.lua before it: keeps the entry when that script
-- marked this batch's sequence as appended (the decision key holds this
-- batch's token), and deletes it otherwise (a duplicate, a sequence older
-- than the window, or a script that did not run, such as after NOSCRIPT).
-- Nothing runs between the XADD and this script, so the newest entry is
-- the one the XADD added.
-- KEYS[1] stream, KEYS[2] decision; ARGV[1] token of this batch
-- Returns 1 when the entry stays, 0 when it was deleted.
local kept = redis.call('GET', KEYS[2]) == ARGV[1]
redis.call('DEL', KEYS[2])
if kept then
  return 1
end
-- Only for batches that are not appended (rare): reading the entry back
-- is the one way to learn the id the XADD gave it.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  redis.call('XDEL', KEYS[1], last[1])
end
return 0

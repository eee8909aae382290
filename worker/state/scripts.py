"""Lua scripts of the Redis store: each runs as one atomic command on one shard.

Every script names only keys of one shard (one hash tag), so a Redis Cluster
runs it on the node owning that shard's slot; a batch sends one call per
shard it touches, pipelined.
"""

# KEYS[1] = the shard's meta hash, KEYS[2..] = distinct fact hashes of the
# shard; ARGV = per fact hash KEYS[i] (i from 2), in order: the position in
# the batch of its first field less one, the number k of its fields wanted,
# and those k fields, each an argument of its own (Redis hands them to HMGET as they came: cutting one
# packed string into fields in Lua cost a third more of Redis's time).
# Returns {meta as a flat list, the number of fields read, then (position,
# value) of each field that holds a value}; positions count the batch's fields
# hash by hash from 1, across shards. Most fields are absent, so the reply
# carries only the few that are not.
READ = """
local out = {redis.call('HGETALL', KEYS[1]), 0}
local call = redis.call
local n, last, at = 0, 2, 1
for i = 2, #KEYS do
  local base = tonumber(ARGV[at])
  local k = tonumber(ARGV[at + 1])
  local values = call('HMGET', KEYS[i], unpack(ARGV, at + 2, at + 1 + k))
  at = at + 2 + k
  for j = 1, k do
    local value = values[j]
    if value then
      out[last + 1] = base + j
      out[last + 2] = value
      last = last + 2
    end
  end
  n = n + k
end
out[2] = n
return out
"""

# Marks the store ready once every partition's progress reaches its target.
_MARK_READY = """
local function mark_ready(meta)
  if redis.call('HGET', meta, 'ready') == '1' then return end
  local all = redis.call('HGETALL', meta)
  for j = 1, #all, 2 do
    local name = all[j]
    if string.sub(name, 1, 7) == 'target:' then
      local applied = tonumber(redis.call('HGET', meta, 'p:' .. string.sub(name, 8)) or '0')
      if applied < tonumber(all[j + 1]) then return end
    end
  end
  redis.call('HSET', meta, 'ready', '1')
end
"""

# KEYS[1] = the shard's meta, KEYS[2..] = distinct fact hashes of the shard.
# ARGV: generation, partition count n, n × (partition, expected, new), the field
# size, then per fact hash one string of its writes, each a field, the value's
# length (4 bytes, big-endian) and the value: a few large arguments instead of
# three small ones per fact, which redis-py and Redis would each handle one by one.
# Checks the generation and the expected progress first so a zombie applier or
# an emptied Redis never gets a partial history, then writes facts and progress together.
COMMIT = (
    _MARK_READY
    + """
local meta = KEYS[1]
local generation = redis.call('HGET', meta, 'generation')
if generation ~= ARGV[1] then
  return redis.error_reply('GENERATION ' .. tostring(generation))
end
local n = tonumber(ARGV[2])
local base = 3
for i = 0, n - 1 do
  local at = base + 3 * i
  local stored = redis.call('HGET', meta, 'p:' .. ARGV[at]) or '-1'
  if stored ~= ARGV[at + 1] then
    return redis.error_reply('CONFLICT partition ' .. ARGV[at] .. ' stored ' .. stored .. ' expected ' .. ARGV[at + 1])
  end
end
local size = tonumber(ARGV[base + 3 * n])
for i = 2, #KEYS do
  local packed = ARGV[base + 3 * n + i - 1]
  local pairs = {}
  local pos = 1
  while pos <= #packed do
    local length = struct.unpack('>I4', packed, pos + size)
    local value_at = pos + size + 4
    pairs[#pairs + 1] = string.sub(packed, pos, pos + size - 1)
    pairs[#pairs + 1] = string.sub(packed, value_at, value_at + length - 1)
    pos = value_at + length
  end
  redis.call('HSET', KEYS[i], unpack(pairs))
end
for i = 0, n - 1 do
  local at = base + 3 * i
  redis.call('HSET', meta, 'p:' .. ARGV[at], ARGV[at + 2])
end
mark_ready(meta)
return redis.call('HGETALL', meta)
"""
)

# KEYS[1] = the shard's meta. ARGV: generation, buckets, fingerprint, layout, shards, then
# (partition, target) pairs. Creates the shard's generation only when none exists, so two
# appliers starting on an empty Redis agree on one generation, and a shard that survived
# keeps its own while a lost one begins anew.
BEGIN_GENERATION = (
    _MARK_READY
    + """
local meta = KEYS[1]
if redis.call('HEXISTS', meta, 'generation') == 1 then
  return redis.call('HGETALL', meta)
end
redis.call('DEL', meta)
redis.call('HSET', meta, 'generation', ARGV[1], 'buckets', ARGV[2], 'fingerprint', ARGV[3], 'layout', ARGV[4],
  'shards', ARGV[5], 'ready', '0')
for i = 6, #ARGV, 2 do
  redis.call('HSET', meta, 'target:' .. ARGV[i], ARGV[i + 1])
end
mark_ready(meta)
return redis.call('HGETALL', meta)
"""
)

"""The Lua scripts of :mod:`.redis`: each operation is one round trip and atomic.

Layout (``B`` = the thread's base key, ``prefix + esc(tenant) + ":" + esc(thread) + ":"``):

- ``B v:<esc key>``: a value (JSON), a string with its own expiry;
- ``B s:<esc key>``: a shared value, ``"<version>|<JSON>"``, with its own expiry;
- ``B m``: the message list (JSON items), with one expiry;
- ``B i``: the thread's index, a hash ``member -> TTL in ms`` (0: never), where a member
  is what follows ``B``: the TTL a read refreshes to, and the entries ``clear``,
  ``keys`` and ``snapshot`` visit (no SCAN). It lives as long as its longest-lived entry.
- ``prefix + esc(tenant) + ":%threads"``: the tenant's threads by last write (epoch
  seconds, Redis's clock), a sorted set of ``esc(thread)``; ``threads`` drops members
  whose index is gone. (``%t`` cannot start an escaped name, so no thread can clash.)

Scripts build entry keys from the base they are given, so they need one Redis server
(not Cluster).
"""

from __future__ import annotations

import hashlib

_HELPERS = """
local function grow(key, ttl, before)
  -- make key live at least ttl ms (0: for ever); before: its PTTL before this script
  if ttl == 0 then
    redis.call('PERSIST', key)
  elseif before == -2 or (before >= 0 and before < ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end

local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

local function later(activity, thread)
  -- now, or just after the thread's last write if the clock has not moved past it:
  -- every write changes the score clear_if_unchanged compares
  local t = now()
  local last = redis.call('ZSCORE', activity, thread)
  if last and tonumber(t) <= tonumber(last) then
    t = string.format('%.6f', tonumber(last) + 0.000001)
  end
  return t
end

local function touch(index, activity, member, ttl, thread)
  -- after a write of member: its TTL in the index, the thread's last write in activity
  local index_before = redis.call('PTTL', index)
  local activity_before = redis.call('PTTL', activity)
  redis.call('HSET', index, member, ttl)
  redis.call('ZADD', activity, later(activity, thread), thread)
  grow(index, ttl, index_before)
  grow(activity, ttl, activity_before)
end

local function refresh(key, index, activity, member)
  local ttl = tonumber(redis.call('HGET', index, member) or '0')
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', index, ttl, 'GT')
    redis.call('PEXPIRE', activity, ttl, 'GT')
  end
end

local function put(key, data, ttl)
  if ttl > 0 then
    redis.call('SET', key, data, 'PX', ttl)
  else
    redis.call('SET', key, data)
  end
end

local function push(key, first)
  -- RPUSH ARGV[first..] in slices (unpack has a limit); the list's new length
  local n = redis.call('LLEN', key)
  for i = first, #ARGV, 1000 do
    n = redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return n
end
"""


class Script:
    """A Lua script and its SHA1 (what EVALSHA names it by)."""

    def __init__(self, body: str) -> None:
        self.source = _HELPERS + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


# KEYS: entry, index, activity. ARGV: member, ttl ms, thread, data.
SET = Script("""
local ttl = tonumber(ARGV[2])
put(KEYS[1], ARGV[4], ttl)
touch(KEYS[2], KEYS[3], ARGV[1], ttl, ARGV[3])
""")

# KEYS: entry, index, activity. ARGV: member. The value, its TTL refreshed.
GET = Script("""
local v = redis.call('GET', KEYS[1])
if v then refresh(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) end
return v
""")

# KEYS: entry, index, activity. ARGV: member, thread. 1 if it was there.
DELETE = Script("""
local n = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if n > 0 then redis.call('ZADD', KEYS[3], 'XX', later(KEYS[3], ARGV[2]), ARGV[2]) end
return n
""")

# KEYS: index. ARGV: base. The live value keys (escaped); drops dead index members.
KEYS = Script("""
local live = {}
for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. m) == 1 then
    if string.sub(m, 1, 2) == 'v:' then live[#live + 1] = string.sub(m, 3) end
  else
    redis.call('HDEL', KEYS[1], m)
  end
end
return live
""")

# KEYS: list, index, activity. ARGV: member, ttl ms, thread, messages... The new length.
APPEND = Script("""
local ttl = tonumber(ARGV[2])
local n = push(KEYS[1], 4)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
touch(KEYS[2], KEYS[3], ARGV[1], ttl, ARGV[3])
return n
""")

# KEYS: list, index, activity. ARGV: member, first index. The items, the list refreshed.
MESSAGES = Script("""
local items = redis.call('LRANGE', KEYS[1], ARGV[2], -1)
if #items > 0 then refresh(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) end
return items
""")

# KEYS: shared, index, activity. ARGV: member, ttl ms, thread, data, expected version.
# The new version, or {current "<version>|<JSON>" or ""} on a conflict.
COMPARE_AND_SET = Script("""
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  version = tonumber(string.sub(current, 1, string.find(current, '|', 1, true) - 1))
end
if version ~= tonumber(ARGV[5]) then return {current or ''} end
local ttl = tonumber(ARGV[2])
put(KEYS[1], string.format('%d|', version + 1) .. ARGV[4], ttl)
touch(KEYS[2], KEYS[3], ARGV[1], ttl, ARGV[3])
return version + 1
""")

# KEYS: index, activity. ARGV: base, thread.
CLEAR = Script("""
for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do redis.call('DEL', ARGV[1] .. m) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
""")

# KEYS: index, activity. ARGV: base, thread, last write (seconds). 1 if cleared: only
# when the thread's activity score is still that last write.
CLEAR_IF = Script("""
local last = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not last or tonumber(last) ~= tonumber(ARGV[3]) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do redis.call('DEL', ARGV[1] .. m) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
""")

# KEYS: activity. ARGV: tenant base (prefix .. esc(tenant) .. ':'), idle seconds.
# Flat {thread, last write, ...}, oldest first; drops threads whose index is gone.
THREADS = Script("""
local idle = tonumber(ARGV[2])
local upto = '+inf'
if idle > 0 then
  local t = redis.call('TIME')
  upto = string.format('%.6f', t[1] + t[2] / 1e6 - idle)
end
local found = redis.call('ZRANGE', KEYS[1], '-inf', upto, 'BYSCORE', 'WITHSCORES')
local out = {}
for i = 1, #found, 2 do
  if redis.call('EXISTS', ARGV[1] .. found[i] .. ':i') == 1 then
    out[#out + 1] = found[i]
    out[#out + 1] = found[i + 1]
  else
    redis.call('ZREM', KEYS[1], found[i])
  end
end
return out
""")

# KEYS: index, activity. ARGV: base, thread.
# {last write or '', {member, value or {messages}, ...}}; refreshes nothing.
SNAPSHOT = Script("""
local out = {}
for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do
  if m == 'm' then
    local items = redis.call('LRANGE', ARGV[1] .. m, 0, -1)
    if #items > 0 then out[#out + 1] = m; out[#out + 1] = items end
  else
    local v = redis.call('GET', ARGV[1] .. m)
    if v then out[#out + 1] = m; out[#out + 1] = v end
  end
end
return {redis.call('ZSCORE', KEYS[2], ARGV[2]) or '', out}
""")

# KEYS: index, activity. ARGV: base, thread, ttl ms, pair count, {member, data}..., messages...
# Merged under what the thread holds: its live entries win, archived messages go first.
RESTORE = Script("""
local index_before = redis.call('PTTL', KEYS[1])
local ttl = tonumber(ARGV[3])
local last = 4 + 2 * tonumber(ARGV[4])
local wrote = false
for i = 5, last, 2 do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    put(ARGV[1] .. ARGV[i], ARGV[i + 1], ttl)
    redis.call('HSET', KEYS[1], ARGV[i], ttl)
    wrote = true
  end
end
if last < #ARGV then
  local list = ARGV[1] .. 'm'
  if redis.call('EXISTS', list) == 1 then  -- before the current ones; their TTL stays
    for i = #ARGV, last + 1, -1 do redis.call('LPUSH', list, ARGV[i]) end
  else
    push(list, last + 1)
    if ttl > 0 then redis.call('PEXPIRE', list, ttl) end
    redis.call('HSET', KEYS[1], 'm', ttl)
  end
  wrote = true
end
if wrote then
  local activity_before = redis.call('PTTL', KEYS[2])
  redis.call('ZADD', KEYS[2], later(KEYS[2], ARGV[2]), ARGV[2])
  grow(KEYS[1], ttl, index_before)
  grow(KEYS[2], ttl, activity_before)
end
""")

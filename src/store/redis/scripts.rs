//! The Lua scripts: each check-and-write is one atomic step in Redis.

use std::sync::LazyLock;

use ::redis::Script;

/// Takes the lock if it is free; answers `{1, version}` (the token's
/// version when the lock was taken: the fencing token) or `{0, pttl}`.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(redis.call('HGET', KEYS[2], 'version') or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Extends the lock if it is still ours.
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes the lock if it is still ours.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The fenced write of a renewal: only while the lock is ours, or, if it
/// expired and nobody took it, while the version is still the one seen
/// when it was taken. Answers the new version, or 0 when refused.
pub(super) static FENCED_SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[2])
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if holder ~= ARGV[3] and (holder or v ~= tonumber(ARGV[4])) then
  return 0
end
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
",
    )
});

/// A write outside a renewal (a token pasted by hand, a login without the
/// lock). Answers the new version.
pub(super) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
",
    )
});

/// Writes a record kept in memory back, only if Redis has nothing newer
/// (after a Redis restart without persistence, or a failed write).
/// Answers 0 when written, else the stored version.
pub(super) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v >= tonumber(ARGV[2]) then
  return v
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 0
",
    )
});

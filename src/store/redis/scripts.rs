//! The Lua scripts: each check-and-write is one atomic step in Redis.

use std::sync::LazyLock;

use ::redis::Script;

/// Takes the lock if it is free; answers `{1, version}` (the token's
/// version when the lock was taken: the fencing token) or `{0, pttl}`.
/// Sent with `EVAL` followed by `WAIT`: the lock is on the replicas
/// before the token request goes out, so a failover cannot hand it to a
/// second replica while the first one's refresh is in flight.
/// KEYS: lock, token. ARGV: owner, ttl in ms.
pub(super) const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(redis.call('HGET', KEYS[2], 'version') or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
";

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
/// when it was taken. Answers the new version, or 0 when refused. Sent
/// with `EVAL` in a pipeline followed by `WAIT` (see `Shared::write_waited`).
/// KEYS: token, lock. ARGV: record, floor, owner, version at take,
/// channel, provider.
pub(super) const FENCED_SAVE: &str = r"
local holder = redis.call('GET', KEYS[2])
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if holder ~= ARGV[3] and (holder or v ~= tonumber(ARGV[4])) then
  return 0
end
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
";

/// A write outside a renewal (a token pasted by hand, a login without the
/// lock). Answers the new version. KEYS: token. ARGV: record, floor,
/// channel, provider.
pub(super) const SAVE: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
";

/// Writes a record kept in memory back, only if Redis has nothing newer
/// (after a Redis restart without persistence, a failover that lost it,
/// or a failed write); the very record at the same version (same bytes)
/// is written again, so that a `WAIT` after it covers it. Answers 0 when
/// written, else the stored version. KEYS: token. ARGV: record, version,
/// channel, provider.
pub(super) const RESTORE: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local ours = tonumber(ARGV[2])
if v > ours or (v == ours and redis.call('HGET', KEYS[1], 'token') ~= ARGV[1]) then
  return v
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', ours)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 0
";

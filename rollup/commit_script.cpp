// The commit script and the builder of its arguments (commit_script.hpp).
#include "commit_script.hpp"

namespace p35 {

const char* const kCommitScript = R"LUA(#!lua
-- P3.5 commit. KEYS[1]: our marker; KEYS[2]: the consumer name's ownership key (fencing);
-- KEYS[3]: the stream; KEYS[4..]: hashes to increment.
-- ARGV[1]: the marker we expect, ARGV[2]: the new marker, ARGV[3]: the instance token that must
-- hold the ownership key ('' for a claim of another consumer's entries: then nobody may hold that
-- name), ARGV[4]: the group, ARGV[5]: the consumer whose marker this is; then for each
-- KEYS[i > 3]: ttl_s (0: keep), field count, field, delta, field, delta, ...
-- All or nothing: everything that could refuse is checked before the first write. The shebang
-- makes Redis refuse the whole script up front when out of memory; type errors, ACL refusals
-- (Redis 7) and fields HINCRBY cannot add to are checked below (a write refused half-way would
-- drop a delta while the marker moves, or make the retry count the rest twice).
local function denied(cmd, ...)
  if redis.acl_check_cmd and not redis.acl_check_cmd(cmd, ...) then
    return redis.error_reply("NOPERM this user has no permissions to run the '" ..
                             string.lower(cmd) .. "' command in the commit script")
  end
end
-- Fencing (one consumer name, one instance; DESIGN §5): refused unless the ownership key holds
-- our token, so an instance that paused past P35_OWNER_TTL_MS and resumed commits nothing. A
-- claim commits only for a name nobody holds (its owner is gone: key expired).
local owner = redis.call('GET', KEYS[2])
if (ARGV[3] == '' and owner) or (ARGV[3] ~= '' and (not owner or string.match(owner, '^%S+') ~= ARGV[3])) then
  return redis.error_reply('P35FENCED the consumer name is held by ' .. (owner or 'nobody (expired)'))
end
-- End of fencing.
local current = redis.call('GET', KEYS[1])
-- Check: the marker exists. A missing marker is data loss in Redis, not a conflict: the caller
-- restores it from its segment or waits for the operator (README "When Redis fails").
if not current then
  return redis.error_reply('P35NOMARKER ' .. KEYS[1] .. ' is missing')
end
if current ~= ARGV[1] then
  return redis.error_reply('P35CONFLICT marker is ' .. tostring(current) .. ', expected ' .. ARGV[1])
end
-- Check: Redis still holds the delivery of the newest entry this commit counts (it stays pending on
-- the consumer until it is acked, after this commit). A primary that came back from an older dump,
-- or a promoted replica that missed the reads, lacks it: the counts above the marker then stand for
-- reads Redis lost, and must be dropped (P35UNHELD), not committed. While the group has not yet
-- delivered that far (a group ingest re-creates at 0 delivers everything again) the commit waits
-- (P35NOTYET). With no stream or no group (deleted by hand) there is nothing to ask: ingest
-- re-creates the group and reports it.
local function cmp(x, y)
  if #x ~= #y then return #x < #y and -1 or 1 end
  if x == y then return 0 end
  return x < y and -1 or 1
end
local function id_le(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  local c = cmp(ams, bms)
  if c == 0 then c = cmp(aseq, bseq) end
  return c <= 0
end
if ARGV[2] ~= ARGV[1] then
  local groups, delivered = redis.pcall('XINFO', 'GROUPS', KEYS[3]), nil
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for k = 1, #g - 1, 2 do
        if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
      end
      if name == ARGV[4] then delivered = last end
    end
  end
  if delivered and not id_le(ARGV[2], delivered) then
    return redis.error_reply('P35NOTYET group ' .. ARGV[4] .. ' has delivered up to ' .. delivered ..
                             ', not yet ' .. ARGV[2] .. ': committing once it has')
  end
  if delivered and #redis.call('XPENDING', KEYS[3], ARGV[4], ARGV[2], ARGV[2], 1, ARGV[5]) == 0 then
    return redis.error_reply('P35UNHELD entry ' .. ARGV[2] .. ' is not pending on ' .. ARGV[5] ..
                             ' in ' .. KEYS[3] .. ': Redis lost the reads this commit counts')
  end
end
local refused = denied('SET', KEYS[1], ARGV[2])
if refused then return refused end
for i = 4, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'hash' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t .. ', not a hash')
  end
  refused = denied('HINCRBY', KEYS[i], 'f', '1') or denied('EXPIRE', KEYS[i], '1')
  if refused then return refused end
end
-- Check: every field to increment is absent or holds an integer HINCRBY can add to (one HMGET
-- per hash, in pieces that unpack() can hold). Up to 18 digits: no count comes near, and the sum
-- with a delta then cannot overflow. Cost (issue 14): a backlog commit of ~935 fields went from
-- 1.49 to 1.98 ms (medians of 10 replays), mostly the HMGET and its argument table.
local a = 6
for i = 4, #KEYS do
  local n = tonumber(ARGV[a + 1])
  local k = 1
  while k <= n do
    local last = math.min(k + 3999, n)
    local fields = {}
    for f = k, last do fields[#fields + 1] = ARGV[a + 2 * f] end
    local vals = redis.call('HMGET', KEYS[i], unpack(fields))
    for f = 1, #fields do
      local v = vals[f]
      if v and not ((v == '0' or string.match(v, '^-?[1-9]%d*$')) and #v <= 18) then
        return redis.error_reply('P35BADFIELD ' .. KEYS[i] .. ' field ' .. fields[f] .. ' holds "' ..
                                 v .. '", not an integer HINCRBY can add to: nothing committed')
      end
    end
    k = last + 1
  end
  a = a + 2 + 2 * n
end
-- Writes: none of them can be refused now.
a = 6
for i = 4, #KEYS do
  local ttl, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
redis.call('SET', KEYS[1], ARGV[2])
return 0
)LUA";

void FieldList::add(const fields::Name& name, int64_t delta) {
  if (delta == 0) return;
  const size_t off = text_.size();
  for (const std::string_view p : name.parts()) text_.append(p);
  items_.push_back({static_cast<uint32_t>(off), static_cast<uint32_t>(text_.size() - off), delta});
}

// KEYS: the marker, the ownership key (fencing), the stream, then the hashes. ARGV: the marker
// expected and the new one, the token, the group and the consumer, then per hash its expiry, its
// field count and its fields with their deltas (the layout kCommitScript reads).
uint64_t build_commit_args(CommandArgs& args, const CommitTarget& target,
                           std::span<const CommitHash> hashes) {
  args.clear();
  size_t nkeys = 3;
  for (const CommitHash& h : hashes) nkeys += !h.fields->empty();
  args.add("EVALSHA").add(target.sha).add(static_cast<long long>(nkeys));
  args.add(target.marker_key).add(target.owner_key).add(target.stream);
  for (const CommitHash& h : hashes)
    if (!h.fields->empty()) args.add(h.key);
  args.add(target.prev.str()).add(target.next.str()).add(target.token).add(target.group);
  args.add(target.consumer);
  uint64_t fields = 0;
  for (const CommitHash& h : hashes) {
    if (h.fields->empty()) continue;
    args.add(h.ttl_s).add(static_cast<long long>(h.fields->size()));
    h.fields->for_each([&](std::string_view name, int64_t d) { args.add(name).add(static_cast<long long>(d)); });
    fields += h.fields->size();
  }
  return fields;
}

}  // namespace p35

-- keygate rate limiter: a batch of Checks, each all-or-nothing, on Redis TIME.
-- One call decides every Check that waited for the same round trip: Redis then parses one
-- command, enters Lua once and reads TIME and the calendar once for all of them. The Checks are
-- decided one after the other, each exactly as if it had been sent alone. The script does only
-- what must be atomic (read, decide, write); the caller works out remaining and reset from the
-- counters it answers.
--
-- Counters live in one hash per owner (a limit key "k:42:burst" is field "burst" of hash
-- "k:42"), so that a Check reads each owner's counters with one HMGET and writes them with one
-- HSET. A window's field holds its TAT, us + frac/limit µs, as "us:frac"; a quota's field is
-- its name and calendar period ("quota:m202611", "daily:d20786") and holds the usage. Field
-- ":exp" holds the hash's expiry (unix ms), moved on only when a counter needs it later: past a
-- window's TAT, an hour past a quota's period.
--
-- ARGV[1] number of Checks, ARGV[2] ms a quota counter outlives its period; then per Check: its
-- number of limits n, its cost, and per limit its field, then by its next value x:
--   x > 0: a window of limit x, then q and rm: its period P is q×x + rm µs and its emission
--          interval T = P/x is q + rm/x, exactly (see gcra in math.go);
--   x = 0: a window that refuses everything (no valid limit or period);
--   x < 0: a quota, -1 per UTC day or -2 per UTC month, then its limit.
-- KEYS: per Check, the owner hash of each of its limits in order.
-- Returns, per Check, the length of its answer and then the answer:
--   {1 allowed | 0 refused, denied index (0-based) or -1, retry µs, now µs,
--    then per limit two values: a window's TAT us and frac after the Check, a quota's usage
--    after the Check and its period's start s},
--   or, when quota counters are missing (a new period, or a Redis that lost them), {2, count,
--   then per missing: index, period start s} (nothing consumed: the caller writes them, from the
--   database or as 0, and asks again; it also drops the quota's earlier periods),
--   or {3} when an owner's key holds something else than a hash (nothing consumed; the caller's
--   Check fails).

local floor, max, tonumber, format, match, unpack, rcall, pcall = math.floor, math.max, tonumber, string.format, string.match, unpack, redis.call, redis.pcall

local function civil(z) -- days since 1970-01-01 -> year, month (H. Hinnant's civil_from_days)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days(y, m) -- days since 1970-01-01 of y-m-01 (days_from_civil)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + floor((153 * mp + 2) / 5)
  return era * 146097 + doe - 719468
end

local t = rcall('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local grace = tonumber(ARGV[2])

-- The calendar periods of now (start s, end s, field suffix), worked out once per batch when
-- the first quota needs them.
local today = floor(now / 86400000000)
local dayS, dayE, daySuffix, monS, monE, monSuffix
local function period(kind)
  if kind == 1 then
    if not dayS then
      dayS, dayE, daySuffix = today * 86400, today * 86400 + 86400, format(':d%d', today)
    end
    return dayS, dayE, daySuffix
  end
  if not monS then
    local y, m = civil(today)
    monS = days(y, m) * 86400
    if m == 12 then monE = days(y + 1, 1) * 86400 else monE = days(y, m + 1) * 86400 end
    monSuffix = format(':m%04d%02d', y, m)
  end
  return monS, monE, monSuffix
end

-- Per limit i of the current Check, 9 slots from (i-1)*9: kind (0 window, 1 day, 2 month),
-- limit, q, rm, then a window's TAT and fraction or a quota's usage and period start, its
-- field, the index of its owner in the Check's owners and of its field in that owner's reads.
-- One flat table, reused by every Check of the batch.
local st = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

local out, o = {}, 0
local k0, a = 0, 3 -- KEYS and ARGV read so far
for _ = 1, tonumber(ARGV[1]) do
  local n, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local need = cost
  if need < 1 then need = 1 end
  -- The Check's owners (usually one or two hashes) and, per owner, the fields to read.
  local owners, reads = {}, {}
  for i = 1, n do
    local b, f, x = (i - 1) * 9, ARGV[a], tonumber(ARGV[a + 1])
    if x > 0 then
      st[b + 1], st[b + 2], st[b + 3], st[b + 4] = 0, x, tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      a = a + 4
    elseif x == 0 then
      st[b + 1], st[b + 2] = 0, 0
      a = a + 2
    else
      local s, _, suffix = period(-x)
      f = f .. suffix
      st[b + 1], st[b + 2], st[b + 6] = -x, tonumber(ARGV[a + 2]), s
      a = a + 3
    end
    local key, j = KEYS[k0 + i], 1
    while owners[j] and owners[j] ~= key do j = j + 1 end
    if not owners[j] then owners[j], reads[j] = key, {':exp'} end
    local r = reads[j]
    r[#r + 1] = f
    st[b + 7], st[b + 8], st[b + 9] = f, j, #r
  end

  -- Pass 1: read every counter (one HMGET per owner) and decide, touching nothing.
  local vals, odd = {}, false
  for j = 1, #owners do
    local v = pcall('HMGET', owners[j], unpack(reads[j]))
    if v.err then odd = true break end
    vals[j] = v
  end
  local allowed, denied, retry, missing = 1, -1, 0, nil
  for i = 1, odd and 0 or n do -- an odd owner: nothing to decide
    local b = (i - 1) * 9
    local kind, lim, v = st[b + 1], st[b + 2], vals[st[b + 8]][st[b + 9]]
    local ok, r = false, 0
    if kind == 0 then
      local tat, frac = now, 0
      if v then
        local us, f = match(v, '^(%d+):(%d+)')
        us, f = tonumber(us) or 0, tonumber(f) or 0
        if us >= now then tat, frac = us, f end
        if frac >= lim then frac = 0 end
      end
      st[b + 5], st[b + 6] = tat, frac
      if lim < 1 then
        r = 1000000
      else
        local q, rm = st[b + 3], st[b + 4]
        local P = q * lim + rm
        if need > lim then
          r = P
        else
          local s = frac + need * rm
          local ahead = tat + need * q + floor(s / lim) - now
          local f = s % lim
          ok = ahead < P or (ahead == P and f == 0)
          r = ahead - P
          if f > 0 then r = r + 1 end
        end
      end
    else
      local used = 0
      if v then
        used = tonumber(v) or 0
      else
        missing = missing or {}
        missing[#missing + 1] = i
      end
      st[b + 5] = used
      ok = lim >= 1 and used + need <= lim
      local _, e = period(kind)
      r = e * 1000000 - now
    end
    if not ok then
      if allowed == 1 or r > retry then
        denied, retry = i - 1, r
      end
      allowed = 0
    end
  end

  if odd then
    out[o + 1], out[o + 2] = 1, 3
    o = o + 2
  elseif missing then
    out[o + 1], out[o + 2], out[o + 3] = 2 + 2 * #missing, 2, #missing
    o = o + 3
    for _, i in ipairs(missing) do
      out[o + 1], out[o + 2] = i - 1, st[(i - 1) * 9 + 6]
      o = o + 2
    end
  else
    -- Pass 2: consume, only when every limit agreed (one HSET per owner), and answer the
    -- counters.
    local consume = allowed == 1 and cost > 0
    local writes, need_, until_ = {}, {}, {} -- per owner: fields to write, expiry needed, expiry to give
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = 4 + 2 * n, allowed, denied, retry, now
    o = o + 5
    for i = 1, n do
      local b = (i - 1) * 9
      local kind, lim, j = st[b + 1], st[b + 2], st[b + 8]
      local w = writes[j]
      if consume and not w then
        w = {owners[j]}
        writes[j], need_[j], until_[j] = w, 0, 0
      end
      if kind == 0 then
        local tat, frac = st[b + 5], st[b + 6]
        if consume and lim >= 1 then
          local q, rm = st[b + 3], st[b + 4]
          local s = frac + cost * rm
          tat, frac = tat + cost * q + floor(s / lim), s % lim
          w[#w + 1], w[#w + 2] = st[b + 7], format('%d:%d', tat, frac)
          -- The hash must outlive the TAT; when it has to be moved on, it goes a period further.
          need_[j] = max(need_[j], floor(tat / 1000) + 1)
          until_[j] = max(until_[j], floor((tat + q * lim + rm) / 1000) + 1)
        end
        out[o + 1], out[o + 2] = tat, frac
      else
        local used = st[b + 5]
        if consume then
          used = used + cost
          w[#w + 1], w[#w + 2] = st[b + 7], format('%d', used)
          local _, e = period(kind)
          need_[j] = max(need_[j], e * 1000 + grace)
          until_[j] = max(until_[j], e * 1000 + grace)
        end
        out[o + 1], out[o + 2] = used, st[b + 6]
      end
      o = o + 2
    end
    for j, w in pairs(writes) do
      if need_[j] > (tonumber(vals[j][1]) or 0) then
        local exp = format('%d', until_[j])
        w[#w + 1], w[#w + 2] = ':exp', exp
        rcall('HSET', unpack(w))
        rcall('PEXPIREAT', owners[j], exp)
      elseif #w > 1 then
        rcall('HSET', unpack(w))
      end
    end
  end
  k0 = k0 + n
end
return out

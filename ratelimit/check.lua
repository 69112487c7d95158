-- keygate rate limiter: one Check, all-or-nothing, on Redis TIME.
-- KEYS[i]: the counter of limit i (a quota's counter is KEYS[i] .. ':' .. its calendar period).
-- ARGV[1] cost, ARGV[2] "1" when missing quota counters must be seeded by the caller,
-- ARGV[3] ms a quota counter outlives its period; then per limit 5 values:
-- kind (0 window, 1 day, 2 month), limit, and for windows the period P in µs and q, rm with
-- P = q×limit + rm: the emission interval T = P/limit is q + rm/limit, exactly (see gcra in
-- math.go). A window's counter is its TAT "us:frac", meaning us + frac/limit µs.
-- Returns {1 allowed | 0 refused, denied index (0-based) or -1, retry µs, now µs,
--          then per limit: remaining, reset µs, used (quotas), period start s (quotas)}
-- or, when quota counters are missing, {2, count, then per missing: index, period start s}.

local floor, min, max, tonumber, format, match = math.floor, math.min, math.max, tonumber, string.format, string.match

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

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local seeded = ARGV[2] == '1'
local grace = tonumber(ARGV[3])
local need = cost
if need < 1 then need = 1 end

local n = #KEYS
local missing = nil
local allowed, denied, retry = 1, -1, 0

-- Per limit i, 10 slots from (i-1)*10: kind, limit, P, q, rm (parsed once), then the counter's
-- value (TAT or usage), the TAT's fraction, the quota counter's key, the period's start and end.
-- One flat table, sized for 4 limits up front: Lua tables cost more to grow than to fill.
local st = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
for i = 1, n do
  local a, b = 3 + (i - 1) * 5, (i - 1) * 10
  local kind, lim, P, q, rm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  st[b + 1], st[b + 2], st[b + 3], st[b + 4], st[b + 5] = kind, lim, P, q, rm
  local ok, r = false, 0
  if kind == 0 then
    local tat, frac = 0, 0
    local v = redis.call('GET', KEYS[i])
    if v then
      local a, f = match(v, '^(%d+):(%d+)$')
      tat, frac = tonumber(a) or 0, tonumber(f) or 0
    end
    if tat < now then tat, frac = now, 0 end
    if frac >= lim then frac = 0 end
    st[b + 6], st[b + 7] = tat, frac
    if P <= 0 or lim < 1 then
      r = 1000000
    elseif need > lim then
      r = P
    else
      local s = frac + need * rm
      local ns, f = tat + need * q + floor(s / lim), s % lim
      local ahead = ns - now
      ok = ahead < P or (ahead == P and f == 0)
      r = ahead - P
      if f > 0 then r = r + 1 end
    end
  else
    local d = floor(now / 86400000000)
    local s, e, suffix
    if kind == 1 then
      s = d * 86400
      e = s + 86400
      suffix = format('d%d', d)
    else
      local y, m = civil(d)
      s = days(y, m) * 86400
      if m == 12 then e = days(y + 1, 1) * 86400 else e = days(y, m + 1) * 86400 end
      suffix = format('m%04d%02d', y, m)
    end
    st[b + 9], st[b + 10] = s, e
    local k = KEYS[i] .. ':' .. suffix
    st[b + 8] = k
    local v = redis.call('GET', k)
    if v then
      st[b + 6] = tonumber(v)
    else
      st[b + 6] = 0
      if seeded then missing = missing or {}; missing[#missing + 1] = i end
    end
    ok = lim >= 1 and st[b + 6] + need <= lim
    r = e * 1000000 - now
  end
  if not ok then
    if allowed == 1 or r > retry then
      denied, retry = i - 1, r
    end
    allowed = 0
  end
end

if missing then
  local out = {2, #missing}
  for _, i in ipairs(missing) do
    out[#out + 1] = i - 1
    out[#out + 1] = st[(i - 1) * 10 + 9]
  end
  return out
end

local consume = allowed == 1 and cost > 0
local out = {allowed, denied, retry, now}
local o = 4
for i = 1, n do
  local b = (i - 1) * 10
  local kind, lim, P, q, rm = st[b + 1], st[b + 2], st[b + 3], st[b + 4], st[b + 5]
  if kind == 0 then
    local tat, frac = st[b + 6], st[b + 7]
    local rem = 0
    if P > 0 and lim >= 1 then
      if consume then
        local s = frac + cost * rm
        tat, frac = tat + cost * q + floor(s / lim), s % lim
        redis.call('SET', KEYS[i], format('%d:%d', tat, frac), 'PX', floor((tat - now) / 1000) + 1)
      end
      local free = P - (tat - now)
      if free > 0 then
        if rm == 0 then rem = floor(free / q) else rem = floor((free * lim - frac) / P) end
        rem = min(max(rem, 0), lim)
      end
    end
    local reset = tat - now
    if frac > 0 then reset = reset + 1 end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = rem, reset, 0, 0
  else
    local used = st[b + 6]
    if consume then
      used = redis.call('INCRBY', st[b + 8], cost)
      if used == cost then
        redis.call('PEXPIREAT', st[b + 8], format('%d', st[b + 10] * 1000 + grace))
      end
    end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = min(max(lim - used, 0), max(lim, 0)), st[b + 10] * 1000000 - now, used, st[b + 9]
  end
  o = o + 4
end
return out

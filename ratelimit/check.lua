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

local floor, tonumber, format, match = math.floor, tonumber, string.format, string.match

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
local cur, qkey, ps, pe = {}, {}, {}, {}
local missing = {}
local allowed, denied, retry = 1, -1, 0

local curf = {}
local kinds, lims, Ps, qs, rms = {}, {}, {}, {}, {}
for i = 1, n do
  local b = 3 + (i - 1) * 5
  local kind, lim, P, q, rm = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  kinds[i], lims[i], Ps[i], qs[i], rms[i] = kind, lim, P, q, rm
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
    cur[i], curf[i] = tat, frac
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
    ps[i], pe[i] = s, e
    local k = KEYS[i] .. ':' .. suffix
    qkey[i] = k
    local v = redis.call('GET', k)
    if v then
      cur[i] = tonumber(v)
    else
      cur[i] = 0
      if seeded then missing[#missing + 1] = i end
    end
    ok = lim >= 1 and cur[i] + need <= lim
    r = e * 1000000 - now
  end
  if not ok then
    if allowed == 1 or r > retry then
      denied, retry = i - 1, r
    end
    allowed = 0
  end
end

if #missing > 0 then
  local out = {2, #missing}
  for _, i in ipairs(missing) do
    out[#out + 1] = i - 1
    out[#out + 1] = ps[i]
  end
  return out
end

local consume = allowed == 1 and cost > 0
local out = {allowed, denied, retry, now}
for i = 1, n do
  local kind, lim, P, q, rm = kinds[i], lims[i], Ps[i], qs[i], rms[i]
  if kind == 0 then
    local tat, frac = cur[i], curf[i]
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
        rem = math.min(math.max(rem, 0), lim)
      end
    end
    local reset = tat - now
    if frac > 0 then reset = reset + 1 end
    out[#out + 1] = rem
    out[#out + 1] = reset
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    local used = cur[i]
    if consume then
      used = redis.call('INCRBY', qkey[i], cost)
      if used == cost then
        redis.call('PEXPIREAT', qkey[i], format('%d', pe[i] * 1000 + grace))
      end
    end
    out[#out + 1] = math.min(math.max(lim - used, 0), math.max(lim, 0))
    out[#out + 1] = pe[i] * 1000000 - now
    out[#out + 1] = used
    out[#out + 1] = ps[i]
  end
end
return out

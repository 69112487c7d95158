-- A stand-in for ratelimit/check.lua that touches no key: it reads TIME, walks the arguments and
-- admits every Check with counters that leave every limit whole (a quota's period start is
-- given as now: the limiter takes its calendar period from it). It measures the floor of the
-- Redis row, what one Redis round trip per request costs on this rig with no limiter work:
--   cp bench/proxy/stub-check.lua ratelimit/check.lua
--   ONLY="keygate-10000-keys keygate-limits-redis" bench/proxy/run.sh
--   git checkout ratelimit/check.lua
local floor = math.floor
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, o, a = {}, 0, 3
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 2
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = 4 + 2 * n, 1, -1, 0, now
  o = o + 5
  for _ = 1, n do
    local x = tonumber(ARGV[a + 1]) -- after the limit's field
    if x > 0 then
      a = a + 4
      out[o + 1], out[o + 2] = now, 0 -- a window's TAT: now, all of it left
    else
      a = a + (x == 0 and 2 or 3)
      out[o + 1], out[o + 2] = 0, floor(now / 1000000) -- a quota: none used, a period from now
    end
    o = o + 2
  end
end
return out

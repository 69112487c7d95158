-- Sends X-API-Key from a file of keys, one per line, rotating through them.
local keys, n, idx = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    keys[n] = line
  end
  idx = math.random(n) - 1
end

function request()
  idx = idx % n + 1
  return wrk.format(nil, nil, { ["X-API-Key"] = keys[idx] })
end

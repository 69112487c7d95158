#!/usr/bin/env bash
# Proxy benchmark: a minimal Go upstream, nginx (plain reverse proxy, 1 worker, upstream
# keepalive), a bare httputil.ReverseProxy with a tuned transport, and keygate's gateway (public
# route; keyed route with 1 key and with 10,000 keys in rotation, keys without limits; the same
# keyed route with 10,000 keys that each have 2 windows and a monthly quota, counted in memory and
# in Redis), all on 127.0.0.1.
# The proxy under test runs on CPU 0; wrk and the upstream share CPU 1, and so does the benchmark's
# own redis-server (Redis is a separate service in any real deployment: on the proxy's core it
# would take a third of that core, as the OS scheduler puts it there when nothing pins it). Runs
# are interleaved (A B C … A B C …) because this machine drifts; the report prints medians and the
# spread, and CPU 0's busy time per request (the proxy's cost whichever CPU limits req/s).
#
# Settings (environment): ROUNDS=5 DURATION=10s DURATION_C1=10s WARMUP=3s KEYS=10000 PROFILE=1
# REDIS= (default: a private redis-server on 127.0.0.1:18012, pinned to CPU 1, stopped at the end;
# REDIS=127.0.0.1:6379 uses that one, wherever the OS runs it — the limits-redis target uses a
# unique key prefix and deletes its keys at the end)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
DURATION_C1=${DURATION_C1:-$DURATION}
WARMUP=${WARMUP:-3s}
KEYS=${KEYS:-10000}
PROFILE=${PROFILE:-1}
REDIS=${REDIS:-}
UP=127.0.0.1:18001 NGINX=127.0.0.1:18002 BARE=127.0.0.1:18003 KG=127.0.0.1:18004 PPROF=127.0.0.1:18005
KGMEM=127.0.0.1:18006 KGREDIS=127.0.0.1:18007 PPROF_MEM=127.0.0.1:18008 PPROF_REDIS=127.0.0.1:18009
RPREFIX="proxybench:$$:$(date +%s%N):"
case $REDIS in 127.0.0.1:*|"") ;; *) echo "REDIS must be on 127.0.0.1" >&2; exit 1 ;; esac
HZ=$(getconf CLK_TCK)

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y nginx wrk
fi

work=$(mktemp -d /tmp/proxybench.XXXXXX)
pids=()
redis_pid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # the private redis-server last: the limits-redis process counts and deletes its keys as it stops
  [ -n "$redis_pid" ] && { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }
  # the limits processes print how many requests they allowed; the Redis one also the sum of its
  # quota counters in Redis and that it deleted its keys
  for l in keygate-memory keygate-redis; do [ -f "$work/$l.log" ] && sed "s/^/$l: /" "$work/$l.log" >&2; done
  return 0
}
trap cleanup EXIT

go build -o "$work/proxybench" ./bench/proxy
bin="$work/proxybench"

if [ -z "$REDIS" ]; then
  REDIS=127.0.0.1:18012 REDIS_WHERE="private redis-server on CPU 1"
  taskset -c 1 redis-server --port 18012 --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" & redis_pid=$!
  for i in $(seq 50); do redis-cli -p 18012 ping >/dev/null 2>&1 && break; sleep 0.1; done
else
  REDIS_WHERE="$REDIS, where the OS runs it"
fi

taskset -c 1 "$bin" upstream -addr $UP & pids+=($!)
taskset -c 0 "$bin" bare -addr $BARE -upstream http://$UP & pids+=($!)
taskset -c 0 "$bin" keygate -addr $KG -upstream http://$UP -keys "$KEYS" -keys-out "$work" -pprof $PPROF 2>"$work/keygate.log" & pids+=($!)
taskset -c 0 "$bin" keygate -addr $KGMEM -upstream http://$UP -keys "$KEYS" -keys-out "$work" -pprof $PPROF_MEM \
  -limits memory 2>"$work/keygate-memory.log" & pids+=($!)
taskset -c 0 "$bin" keygate -addr $KGREDIS -upstream http://$UP -keys "$KEYS" -keys-out "$work" -pprof $PPROF_REDIS \
  -limits redis -redis "$REDIS" -redis-prefix "$RPREFIX" 2>"$work/keygate-redis.log" & pids+=($!)

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream backend { server $UP; keepalive 128; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

for i in $(seq 100); do
  if curl -fsS http://$UP/ >/dev/null 2>&1 && curl -fsS http://$NGINX/ >/dev/null 2>&1 &&
     curl -fsS http://$BARE/ >/dev/null 2>&1 && curl -fsS http://$KG/public >/dev/null 2>&1 &&
     curl -fsS http://$KGMEM/public >/dev/null 2>&1 && curl -fsS http://$KGREDIS/public >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS -H "X-API-Key: $(head -1 "$work/keys-1.txt")" http://$KG/keyed >/dev/null
for a in "$KGMEM memory" "$KGREDIS redis"; do
  set -- $a
  # the limits must be there: the answer carries the RateLimit-Policy of 2 windows and the quota
  curl -fsS -D - -o /dev/null -H "X-API-Key: $(head -1 "$work/keys-$2-$KEYS.txt")" http://$1/keyed |
    grep -qi '^ratelimit-policy: "burst".*"minute".*"quota"' || { echo "keygate-limits-$2: no RateLimit-Policy with 2 windows + quota" >&2; exit 1; }
done

# name url [lua args]
targets=(
  "upstream-direct|http://$UP/|"
  "nginx|http://$NGINX/|"
  "bare-go-proxy|http://$BARE/|"
  "keygate-public|http://$KG/public|"
  "keygate-1-key|http://$KG/keyed|$work/keys-1.txt"
  "keygate-${KEYS}-keys|http://$KG/keyed|$work/keys-$KEYS.txt"
  "keygate-limits-memory|http://$KGMEM/keyed|$work/keys-memory-$KEYS.txt"
  "keygate-limits-redis|http://$KGREDIS/keyed|$work/keys-redis-$KEYS.txt"
)

# ONLY="name name …" measures a subset of the targets (e.g. after a change to one of them).
if [ -n "${ONLY:-}" ]; then
  kept=()
  for t in "${targets[@]}"; do
    for o in $ONLY; do [ "${t%%|*}" = "$o" ] && kept+=("$t"); done
  done
  targets=("${kept[@]}")
fi

to_ms() { # wrk prints 1.23ms, 456.00us, 1.02s
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'
}

wrk_run() { # name url lua conns duration round
  local name=$1 url=$2 lua=$3 conns=$4 dur=$5 round=$6 out
  local args=(-t2 -c"$conns" -d"$dur" --latency)
  [ "$conns" = 1 ] && args=(-t1 -c1 -d"$dur" --latency)
  if [ -n "$lua" ]; then args+=(-s bench/proxy/keys.lua "$url" -- "$lua"); else args+=("$url"); fi
  local before after
  before=$(awk '$1=="cpu0" {print $2+$3+$4+$7+$8}' /proc/stat)
  out=$(taskset -c 1 wrk "${args[@]}")
  after=$(awk '$1=="cpu0" {print $2+$3+$4+$7+$8}' /proc/stat)
  local rps p50 p99 non2xx reqs cpu
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  # CPU 0's busy time (user, nice, system, irq, softirq) per request, in µs
  cpu=$(awk -v b="$before" -v a="$after" -v n="$reqs" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.1f", (a-b)*1e6/hz/n; else print 0 }')
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  [ -n "$non2xx" ] && echo "WARNING: $name had $non2xx non-2xx answers" >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" >>"$work/results.tsv"
  printf 'round %s %-22s c%-3s %10s req/s  p50 %sms  p99 %sms  cpu0 %sus/req\n' "$round" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" >&2
}

: >"$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url lua <<<"$t"
    # warm-up: connections, caches, the Go runtime's heap
    if [ -n "$lua" ]; then taskset -c 1 wrk -t2 -c50 -d"$WARMUP" -s bench/proxy/keys.lua "$url" -- "$lua" >/dev/null
    else taskset -c 1 wrk -t2 -c50 -d"$WARMUP" "$url" >/dev/null; fi
    wrk_run "$name" "$url" "$lua" 50 "$DURATION" "$round"
    wrk_run "$name" "$url" "$lua" 1 "$DURATION_C1" "$round"
  done
done

echo
echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION DURATION_C1=$DURATION_C1 WARMUP=$WARMUP KEYS=$KEYS REDIS=$REDIS_WHERE; proxy on CPU 0, wrk + upstream on CPU 1"
"$bin" report -limits-base "keygate-${KEYS}-keys" "$work/results.tsv"
cp "$work/results.tsv" "${RESULTS:-/tmp/proxybench-results.tsv}"

if [ "$PROFILE" = 1 ]; then
  for p in "keys $KG $PPROF" "memory $KGMEM $PPROF_MEM" "redis $KGREDIS $PPROF_REDIS"; do
    set -- $p
    if [ "$1" = keys ]; then name="keygate-$KEYS-keys" keyfile="$work/keys-$KEYS.txt"; else name="keygate-limits-$1" keyfile="$work/keys-$1-$KEYS.txt"; fi
    echo
    echo "pprof: $name (keyed route, $KEYS keys), 10 s CPU profile under wrk -c50"
    taskset -c 1 wrk -t2 -c50 -d12s -s bench/proxy/keys.lua "http://$2/keyed" -- "$keyfile" >/dev/null &
    sleep 1
    curl -fsS -o "$work/cpu-$1.pprof" "http://$3/debug/pprof/profile?seconds=10"
    wait $!
    go tool pprof -top -nodecount=35 "$bin" "$work/cpu-$1.pprof" 2>/dev/null | head -45
    cp "$work/cpu-$1.pprof" "${PROFILE_OUT:-/tmp/proxybench-cpu}-$1.pprof"
  done
fi

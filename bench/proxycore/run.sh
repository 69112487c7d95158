#!/usr/bin/env bash
# Proxy-core benchmark: nginx (1 worker, upstream keepalive) against four Go proxy targets in front
# of the same minimal Go upstream, on 127.0.0.1 only: nethttp (httputil.ReverseProxy, what the
# gateway runs), nethttp-raw (hand-rolled net/http forwarder; ReverseProxy only for Upgrade
# requests), fasthttp (buffered bodies) and
# fasthttp-stream (StreamRequestBody + StreamResponseBody).
# Each proxy runs on CPU 0 with GOMAXPROCS=1; wrk and the upstream share CPU 1. Runs are
# interleaved (A B C D E A B C D E …); the report prints medians, the spread and the ratios.
#
# Settings (environment): ROUNDS=5 DURATION=8s DURATION_C1=$DURATION WARMUP=3s DIRECT=0
# (DIRECT=1 also measures wrk straight against the upstream.)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8s}
DURATION_C1=${DURATION_C1:-$DURATION}
WARMUP=${WARMUP:-3s}
DIRECT=${DIRECT:-0}
UP=127.0.0.1:18101 NGINX=127.0.0.1:18102 NETHTTP=127.0.0.1:18103 RAW=127.0.0.1:18104 FAST=127.0.0.1:18105 FASTS=127.0.0.1:18106

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y nginx wrk || { apt-get update && apt-get install -y nginx wrk; }
fi

work=$(mktemp -d /tmp/proxycore.XXXXXX)
chmod 755 "$work" # nginx workers (nobody) write request-body temp files under it
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/proxycore" ./bench/proxycore
bin="$work/proxycore"

echo "load before: $(uptime)"
GOMAXPROCS=1 taskset -c 1 "$bin" upstream -addr $UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$bin" nethttp -addr $NETHTTP -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$bin" nethttp-raw -addr $RAW -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$bin" fasthttp -addr $FAST -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$bin" fasthttp -stream -addr $FASTS -upstream http://$UP & pids+=($!)

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
  # bench/proxy's nginx, plus what the correctness probe needs: Upgrade passed on (the map gives
  # Connection "" to every request without Upgrade, as bench/proxy sets it) and 16 MiB bodies.
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  client_max_body_size 16m;
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

ready=0
for i in $(seq 100); do
  ok=1
  for a in $UP $NGINX $NETHTTP $RAW $FAST $FASTS; do curl -fsS http://$a/ >/dev/null 2>&1 || ok=0; done
  if [ $ok = 1 ]; then ready=1; break; fi
  sleep 0.3
done
[ $ready = 1 ] || { echo "proxycore: targets did not come up" >&2; exit 1; }

echo
echo "correctness probe (streamed answer, 8 MiB chunked request body, Upgrade to a raw byte echo):"
for t in "nginx|$NGINX" "nethttp|$NETHTTP" "nethttp-raw|$RAW" "fasthttp|$FAST" "fasthttp-stream|$FASTS"; do
  IFS='|' read -r name a <<<"$t"
  printf '  %-16s %s\n' "$name" "$("$bin" probe -url http://$a 2>&1)"
done
echo
echo "hostile input (status each proxy answers; 0 = closed without an answer; for 200s, the planted fields the upstream saw):"
"$bin" hostile upstream=$UP nginx=$NGINX nethttp=$NETHTTP nethttp-raw=$RAW fasthttp=$FAST fasthttp-stream=$FASTS | sed 's/^/  /'
echo

targets=("nginx|http://$NGINX/" "nethttp|http://$NETHTTP/" "nethttp-raw|http://$RAW/" "fasthttp|http://$FAST/" "fasthttp-stream|http://$FASTS/")
[ "$DIRECT" = 1 ] && targets=("upstream-direct|http://$UP/" "${targets[@]}")

to_ms() { # wrk prints 1.23ms, 456.00us, 1.02s
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'
}

wrk_run() { # name url conns duration round
  local name=$1 url=$2 conns=$3 dur=$4 round=$5 out
  local args=(-t2 -c"$conns" -d"$dur" --latency)
  [ "$conns" = 1 ] && args=(-t1 -c1 -d"$dur" --latency)
  out=$(taskset -c 1 wrk "${args[@]}" "$url")
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  [ -n "$non2xx" ] && echo "WARNING: $name had $non2xx non-2xx answers" >&2
  grep -q 'Socket errors' <<<"$out" && echo "WARNING: $name: $(grep 'Socket errors' <<<"$out")" >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$conns" "$rps" "$p50" "$p99" >>"$work/results.tsv"
  printf 'round %s %-16s c%-3s %10s req/s  p50 %sms  p99 %sms\n' "$round" "$name" "$conns" "$rps" "$p50" "$p99" >&2
}

: >"$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url <<<"$t"
    taskset -c 1 wrk -t2 -c50 -d"$WARMUP" "$url" >/dev/null # warm-up: connections, the Go heap
    wrk_run "$name" "$url" 50 "$DURATION" "$round"
    wrk_run "$name" "$url" 1 "$DURATION_C1" "$round"
  done
done

echo
echo "load after: $(uptime)"
echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION DURATION_C1=$DURATION_C1 WARMUP=$WARMUP; proxies on CPU 0 (GOMAXPROCS=1, nginx 1 worker), wrk + upstream on CPU 1; c50 = wrk -t2 -c50, c1 = wrk -t1 -c1"
"$bin" report "$work/results.tsv"
cp "$work/results.tsv" "${RESULTS:-/tmp/proxycore-results.tsv}"

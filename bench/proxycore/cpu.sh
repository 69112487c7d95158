#!/usr/bin/env bash
# Which CPU limits each target, and what one request costs the proxy's CPU. run.sh's req/s for
# nginx and fasthttp are capped by CPU 1 (wrk + upstream at ~100%) while CPU 0 still idles, so
# their ratios understate the gap. This runs wrk -t2 -c50 for 5 s per target (after a 2 s
# warm-up), reads /proc/stat around it, and prints per round: req/s, CPU 0 and CPU 1 busy %, and
# CPU 0 microseconds per request (busy fraction / req/s); then the medians and the cost ratios.
# Settings (environment): ROUNDS=3. Needs run.sh's tools (nginx, wrk); 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
w=$(mktemp -d /tmp/proxycore-cpu.XXXXXX)
chmod 755 "$w"
mkdir -p "$w/nginx"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$w"; }
trap cleanup EXIT
B=$w/proxycore
go build -o "$B" ./bench/proxycore
UP=127.0.0.1:18101
GOMAXPROCS=1 taskset -c 1 "$B" upstream -addr $UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$B" nethttp -addr 127.0.0.1:18103 -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$B" nethttp-raw -addr 127.0.0.1:18104 -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$B" fasthttp -addr 127.0.0.1:18105 -upstream http://$UP & pids+=($!)
GOMAXPROCS=1 taskset -c 0 "$B" fasthttp -stream -addr 127.0.0.1:18106 -upstream http://$UP & pids+=($!)
cat >"$w/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $w/nginx/nginx.pid; error_log $w/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $w/nginx/body; proxy_temp_path $w/nginx/proxy;
  fastcgi_temp_path $w/nginx/f; uwsgi_temp_path $w/nginx/u; scgi_temp_path $w/nginx/s;
  upstream backend { server $UP; keepalive 128; }
  server { listen 127.0.0.1:18102; location / { proxy_pass http://backend; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
taskset -c 0 nginx -c "$w/nginx/nginx.conf" -p "$w/nginx" & pids+=($!)
sleep 1.5
stat() { awk '/^cpu[01] /{print $1, $2+$3+$4+$7+$8, $5+$6}' /proc/stat; } # busy (user nice system irq softirq), idle (idle iowait)
echo "load before: $(uptime)"
for round in $(seq "$ROUNDS"); do
  for t in direct=18101 nginx=18102 nethttp=18103 nethttp-raw=18104 fasthttp=18105 fasthttp-stream=18106; do
    n=${t%%=*} p=${t#*=}
    taskset -c 1 wrk -t2 -c50 -d2s "http://127.0.0.1:$p/" >/dev/null
    a=$(stat)
    r=$(taskset -c 1 wrk -t2 -c50 -d5s "http://127.0.0.1:$p/" | awk '/Requests\/sec/{print $2}')
    b=$(stat)
    paste <(echo "$a") <(echo "$b") | awk -v n="$n" -v r="$r" -v round="$round" '
      {busy[NR]=$5-$2; tot[NR]=$5-$2+$6-$3}
      END {b0=busy[1]/tot[1]; printf "%s\t%s\t%.0f\t%.0f\t%.0f\t%.1f\n", round, n, r, 100*b0, 100*busy[2]/tot[2], 1e6*b0/r}'
  done
done | tee "$w/cpu.tsv" >&2
echo "load after: $(uptime)"
awk -F'\t' '
  { n=$2; v[n]=v[n] " " $6; rps[n]=rps[n] " " $3; c0[n]=c0[n] " " $4; c1[n]=c1[n] " " $5; if (!(n in seen)) { seen[n]=1; names[++k]=n } }
  function med(s,   a, m, i, j, x) {
    m = split(substr(s, 2), a, " ")
    for (i = 2; i <= m; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j+1] = a[j]; a[j+1] = x }
    return m % 2 ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2
  }
  END {
    printf "%-16s %9s %7s %7s %12s %15s\n", "target", "req/s", "cpu0 %", "cpu1 %", "cpu0 us/req", "nginx cost / it"
    for (i=1; i<=k; i++) { n=names[i]; m=med(v[n]); printf "%-16s %9.0f %7.0f %7.0f %12.1f %15s\n", n, med(rps[n]), med(c0[n]), med(c1[n]), m, (n=="direct" ? "-" : sprintf("%.2f", med(v["nginx"])/m)) }
  }' "$w/cpu.tsv"

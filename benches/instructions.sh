#!/usr/bin/env bash
# Instructions per request of each steady target of `cargo bench --bench http`, counted by
# callgrind: the same servers as the benchmark (its `--serve` mode) under valgrind, each target
# driven by wrk for a few seconds with counting on, then its count divided by the requests wrk
# finished. User-space instructions of the serving process only (the kernel, Redis and
# PostgreSQL are not counted), so the figure repeats from run to run whatever else the machine
# is doing. Needs valgrind and wrk, and the services the benchmark needs.
#
#   bash benches/instructions.sh            # prints one line per target
#   OUT=dir bash benches/instructions.sh    # also keeps each target's callgrind file in dir
set -euo pipefail
cd "$(dirname "$0")/.."
# The benchmark's own executable (cargo also lists the `lectern` binary it builds for it).
bench=$(cargo bench --bench http --no-run --message-format=json |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1 || true)
[ -n "$bench" ] || { echo "the benchmark did not build" >&2; exit 1; }
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
log="$out/serve.log"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.%p" \
    "$bench" --serve >"$log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    grep -q "api/v1/me" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 1
done
# The command the benchmark prints for a target, with fewer connections for the slower server.
command_for() { grep -A1 -- "$1" "$log" | tail -1 | sed 's/-t1 -c64 -d10s/-t1 -c16 -d4s/'; }
printf '%-52s %9s %12s\n' target requests instr/req
# The bearer call first: its access token lives five minutes from the start.
for target in "bare axum handler" "one Redis GET" "HS256 verify" "api/v1/me" \
    "lectern: GET /healthz" "static asset" "GET / as a visitor" "dashboard signed in"; do
    cmd=$(command_for "$target")
    eval "$cmd" >/dev/null # warm-up, not counted
    callgrind_control -i on "$pid" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null 2>&1
    result=$(eval "$cmd")
    requests=$(echo "$result" | awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$target" "$pid" >/dev/null 2>&1
    file=$(ls -t "$out"/callgrind.* | head -1)
    total=$(awk '/^totals:/ {print $2}' "$file")
    refused=$(echo "$result" | awk '/Non-2xx/ {print " (" $NF " answered other than 2xx)"}')
    printf '%-52s %9d %12d%s\n' "$target" "$requests" $((total / requests)) "$refused"
done

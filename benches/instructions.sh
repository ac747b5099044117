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
    grep -q "1,000 rows of activity" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 1
done
# The command the benchmark prints for a target, with fewer connections for the slower server.
command_for() { grep -m1 -A1 -- "$1" "$log" | tail -1 | sed 's/-t1 -c64 -d10s/-t1 -c16 -d4s/'; }
printf '%-52s %9s %12s\n' target requests instr/req
# Every target the benchmark serves, the baselines first.
for target in "bare axum handler" "one Redis GET" "HS256 verify" "axum-login + tower" "api/v1/me" \
    "lectern: GET /healthz" "static asset" "GET / as a visitor" "dashboard signed in" \
    "account signed in" "1 live sign-in" "20 live sign-ins" "100 live sign-ins" \
    "1,000 rows of activity"; do
    cmd=$(command_for "$target")
    eval "$cmd" >/dev/null # warm-up, not counted
    callgrind_control -i on "$pid" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null 2>&1
    result=$(eval "$cmd")
    requests=$(echo "$result" | awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    dumps=$(ls "$out"/callgrind.* | wc -l)
    # The dump is written when the process next gets to it; a busy one can miss the request, so
    # ask again until the new file is there.
    for _ in 1 2 3 4 5; do
        callgrind_control --dump="$(echo "$target" | tr -c 'A-Za-z0-9\n' _)" "$pid" >/dev/null 2>&1
        for _ in $(seq 1 50); do
            [ "$(ls "$out"/callgrind.* | wc -l)" -gt "$dumps" ] && break 2
            sleep 0.1
        done
    done
    [ "$(ls "$out"/callgrind.* | wc -l)" -gt "$dumps" ] || { echo "no dump for $target" >&2; exit 1; }
    file=$(ls -t "$out"/callgrind.* | head -1)
    total=$(awk '/^totals:/ {print $2}' "$file")
    refused=$(echo "$result" | awk '/Non-2xx/ {print " (" $NF " answered other than 2xx)"}')
    printf '%-52s %9d %12d%s\n' "$target" "$requests" $((total / requests)) "$refused"
done

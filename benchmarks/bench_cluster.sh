#!/usr/bin/env bash
# What the nginx hop and a read replica cost, on real `fastpost cluster up` topologies.
#
# Each topology runs pinned to core 0 (taskset is inherited by nginx, the instances, PostgreSQL
# and Redis), wrk runs on core 1: `wrk -t1 -c64 -d8s`, 3 runs each, the median printed with
# its p99 and its ratio to the baseline of the same run: one instance of 2 workers, asked
# directly. On 2 cores every part shares one core, so this measures what each part costs, not
# what it adds on a machine with a core per part (README "Scaling out" says what to expect).
#
#   benchmarks/bench_cluster.sh [STATE_ROOT]      (default: a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
FASTPOST=${FASTPOST:-.venv/bin/fastpost}
ROOT=${1:-$(mktemp -d)}
mkdir -p "$ROOT"
RUNS=3
# wrk asks for search from one address far faster than the rate limits let a client: off in
# every instance (they inherit FASTPOST_* variables from `cluster up`).
export FASTPOST_RATE_LIMITS__ENABLED=false
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }

declare -A BASE
median_of_runs() {  # median_of_runs URL: "req/s p99" of the median run by req/s
	for _ in $(seq $RUNS); do
		taskset -c 1 wrk -t1 -c64 -d8s --latency "$1" |
			awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r, p}'
	done | sort -n | sed -n "$(((RUNS + 1) / 2))p"
}
measure() {  # measure LABEL PATH URL
	read -r rps p99 < <(median_of_runs "$3")
	local key=$2 ratio="1.00"
	if [[ -z ${BASE[$key]:-} ]]; then BASE[$key]=$rps; else ratio=$(awk -v a="$rps" -v b="${BASE[$key]}" 'BEGIN {printf "%.2f", a / b}'); fi
	printf '%-34s %-24s %9.0f req/s  p99 %-9s %sx\n' "$1" "$2" "$rps" "$p99" "$ratio"
}
port_of() {  # port_of STATE KIND
	"$FASTPOST" cluster status --state-dir "$1" --json |
		python3 -c "import json, sys; print(next(p['port'] for p in json.load(sys.stdin) if p['kind'] == '$2'))"
}
up() {  # up STATE OPTIONS...: a topology on free ports, 20,000 posts
	taskset -c 0 "$FASTPOST" cluster up --state-dir "$1" --free-ports --port 0 --no-backup \
		--posts 20000 "${@:2}" >"$1.up.log" 2>&1 || { cat "$1.up.log"; exit 1; }
}
trap 'for s in "$ROOT"/one "$ROOT"/two "$ROOT"/replica; do [[ -d $s ]] && "$FASTPOST" cluster down --state-dir "$s" >/dev/null 2>&1; done' EXIT
CACHED="/posts/?limit=20"
UNCACHED="/posts/search?q=lorem"

up "$ROOT/one" --instances 1 --replicas 0 --workers 2
nginx=$(port_of "$ROOT/one" nginx) instance=$(port_of "$ROOT/one" instance)
for path in "$CACHED" "$UNCACHED"; do measure "1 instance x 2 workers, direct" "$path" "http://127.0.0.1:$instance$path"; done
for path in "$CACHED" "$UNCACHED"; do measure "1 instance x 2 workers, nginx" "$path" "http://127.0.0.1:$nginx$path"; done
"$FASTPOST" cluster down --state-dir "$ROOT/one" >/dev/null

up "$ROOT/two" --instances 2 --replicas 0 --workers 1
nginx=$(port_of "$ROOT/two" nginx)
for path in "$CACHED" "$UNCACHED"; do measure "2 instances x 1 worker, nginx" "$path" "http://127.0.0.1:$nginx$path"; done
"$FASTPOST" cluster down --state-dir "$ROOT/two" >/dev/null

up "$ROOT/replica" --instances 1 --replicas 1 --workers 2
nginx=$(port_of "$ROOT/replica" nginx)
measure "1 instance, nginx, reads on a replica" "$UNCACHED" "http://127.0.0.1:$nginx$UNCACHED"

# Shared by the fleet benchmarks (bench-fleet, bench-mqtt): a release courier-server on
# loopback ports of its own, and courier-sim runs against it that leave their JSON report.
# Source it after `cd` to the repository root; it sets `work`, `server_pid` and a cleanup trap.

scratch=${COURIER_SCRATCH_PATH:-.build}
swift build -c release --scratch-path "$scratch" --product courier-server >&2
swift build -c release --scratch-path "$scratch" --product courier-sim >&2
swift build -c release --scratch-path "$scratch" --product courier >&2
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)
# COURIER_SERVER_BIN runs another build of the server (say, the last commit's) against the
# same simulator, to compare two builds side by side in one session.
server_bin=${COURIER_SERVER_BIN:-$bin/courier-server}
# COURIER_SIM_BIN likewise runs another build of the simulator against the same server.
sim_bin=${COURIER_SIM_BIN:-$bin/courier-sim}

work=$(mktemp -d "${TMPDIR:-/tmp}/courier-bench.XXXXXX")
pids=()
server_pid=
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Each device needs a UDP and a TCP socket in the simulator, and a TCP socket in the server.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

base_port=$((20000 + RANDOM % 10000))

# start_server NAME [serve flags...]: a fresh data directory; waits until it answers.
start_server() {
    local name=$1; shift
    data="$work/$name"
    coap_port=$base_port; push_port=$((base_port + 1)); http_port=$((base_port + 2))
    base_port=$((base_port + 3))
    # The benchmarks measure the server's capacity, so a sender above 50 msgs/s is not
    # turned away by the per-device limit (4.29).
    COURIER_DEVICE_RATE_PER_SECOND=1000000 COURIER_DEVICE_BURST=1000000 \
        "$server_bin" serve --data-dir "$data" --bind 127.0.0.1 --coap-port "$coap_port" \
        --http-bind 127.0.0.1 --http-port "$http_port" --push-port "$push_port" --log-level warning "$@" \
        >"$work/$name.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 1 200); do
        "$bin/courier" ping --server "127.0.0.1:$coap_port" >/dev/null 2>&1 && [ -s "$data/admin.token" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "courier-server exited: $(tail -5 "$work/$name.log")" >&2; return 1; }
        sleep 0.1
    done
    echo "courier-server did not come up" >&2
    return 1
}

stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }

# cpu_ticks, switches and run_ns PID: what the process has cost so far.
source "$(dirname "${BASH_SOURCE[0]}")/process-cost.sh"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# simulate REPORT [courier-sim run flags...]: runs against the current server; the report's
# JSON lands in REPORT. Returns courier-sim's status (1: the oracle found faults).
simulate() {
    local report=$1; shift
    "$sim_bin" run --server "127.0.0.1:$coap_port" --push-port "$push_port" \
        --admin "http://127.0.0.1:$http_port" --admin-token-file "$data/admin.token" \
        --json "$report" --quiet "$@" >"$report.txt" 2>&1
}

# field REPORT PYTHON-EXPRESSION-OVER-r: one figure from a report, e.g. "r['send_to_delivery']['p99']".
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['report']; print($2)" "$1"; }
# delivery_p99 REPORT: p99 send->delivery in ms; nan when the run recorded no delivery (the
# simulator reports an empty distribution's percentiles as 0), so no "< 100" check passes it.
delivery_p99() { field "$1" "r['send_to_delivery']['p99'] if r['send_to_delivery']['count'] > 0 else float('nan')"; }

# calc EXPRESSION: arithmetic with fractions (bc is not on every machine; python3 is).
calc() { python3 -c "print($1)"; }

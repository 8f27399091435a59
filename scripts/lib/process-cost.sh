# What a process has cost so far, from /proc: sourced by the benchmarks that divide it by the
# work done over a window (bench-cost, bench-send, bench-dtls, through fleet-bench.sh).

# cpu_ticks PID: utime + stime of the whole process (every thread), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# switches PID: voluntary + involuntary context switches summed over its threads. A thread
# that ends between the glob and cat only drops its own count; that is not an error.
switches() { { cat /proc/"$1"/task/*/status 2>/dev/null || true; } | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { s += $2 } END { print s + 0 }'; }

# run_ns PID: time its threads spent on a CPU, in ns, from the scheduler's own accounting
# (se.sum_exec_runtime in /proc/PID/task/*/sched, in ms): exact, where the tick-sampled
# utime+stime of this virtual machine was seen to claim 2.3 cores busy on a 2-core machine.
run_ns() { { cat /proc/"$1"/task/*/sched 2>/dev/null || true; } | awk '/^se.sum_exec_runtime/ { s += $3 } END { printf "%.0f\n", s * 1e6 }'; }

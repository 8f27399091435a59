"""What a process's threads did between two `per_thread` snapshots (lines of "name switches
run_ns"), summed by kind of thread: the name with its numbers taken out. A thread born or
ended between the snapshots counts what the later one shows of it."""
import collections
import re


def _per_kind(path):
    switches, cpu_ns = collections.Counter(), collections.Counter()
    for line in open(path):
        name, count, thread_ns = line.rsplit(" ", 2)
        kind = re.sub(r"[0-9]+", "N", name)
        switches[kind] += int(count or 0)
        cpu_ns[kind] += int(thread_ns or 0)
    return switches, cpu_ns


def deltas(before_path, after_path):
    """[(kind, switches, cpu_ns)] of the kinds that switched or ran, most switches first."""
    (s0, c0), (s1, c1) = _per_kind(before_path), _per_kind(after_path)
    rows = [(kind, s1[kind] - s0.get(kind, 0), c1[kind] - c0.get(kind, 0)) for kind in s1]
    return sorted((row for row in rows if row[1] > 0 or row[2] > 0), key=lambda row: -row[1])

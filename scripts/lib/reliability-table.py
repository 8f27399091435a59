#!/usr/bin/env python3
"""Prints the reliability suite's rows (JSON lines: test, fault, figure, result) as one table.

Usage: reliability-table.py ROWS_FILE
Exits 1 when a row failed, or when there are no rows at all (the suite proved nothing).
"""
import json
import sys
import textwrap

WIDTHS = {"test": 64, "fault": 40, "figure": 64, "result": 6}


def main() -> int:
    rows = []
    try:
        with open(sys.argv[1], encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        pass
    if not rows:
        print("reliability: no rows were recorded; the suite proved nothing", file=sys.stderr)
        return 1
    columns = list(WIDTHS)
    rule = "+" + "+".join("-" * (WIDTHS[c] + 2) for c in columns) + "+"
    print(rule)
    print("|" + "|".join(f" {c:<{WIDTHS[c]}} " for c in columns) + "|")
    print(rule)
    for row in rows:
        cells = [textwrap.wrap(str(row.get(c, "")), WIDTHS[c]) or [""] for c in columns]
        for i in range(max(len(cell) for cell in cells)):
            print("|" + "|".join(f" {(cell[i] if i < len(cell) else ''):<{WIDTHS[c]}} " for c, cell in zip(columns, cells)) + "|")
    print(rule)
    failed = [row["test"] for row in rows if row.get("result") == "FAIL"]
    # Repeated under the table, so that a log cut to its last lines still says what failed.
    for row in rows:
        if row.get("result") == "FAIL":
            print(f"FAILED {row['test']}: {row.get('figure', '')}")
    passed = sum(1 for row in rows if row.get("result") == "pass")
    skipped = sum(1 for row in rows if row.get("result") == "skip")
    print(f"reliability: {passed} passed, {len(failed)} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

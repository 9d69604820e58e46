"""Where a Snakemake run's time goes: per rule, the number of jobs, their summed and mean wall time, from the
run's log (.snakemake/log/*.snakemake.log or the captured output).

    python benchmarks/demo_timing.py .snakemake/log/<latest>.snakemake.log
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
START = re.compile(r"^(?:local)?rule (\w+):")
JOBID = re.compile(r"^\s+jobid: (\d+)")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def parse(lines):
    now, pending_rule, started, spans = None, None, {}, defaultdict(list)
    first = last = None
    for line in lines:
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first, last = first or now, now
        elif m := START.match(line):
            pending_rule = m.group(1)
        elif (m := JOBID.match(line)) and pending_rule:
            started[m.group(1)] = now
            pending_rule = None
        elif m := DONE.match(line):
            if m.group(1) in started:
                spans[m.group(2)].append((now - started.pop(m.group(1))).total_seconds())
    return spans, (last - first).total_seconds() if first else 0.0


def main(path: str) -> None:
    with open(path) as handle:
        spans, wall = parse(handle)
    total = sum(sum(v) for v in spans.values())
    print(f"wall clock {wall:.0f} s; job time summed over jobs {total:.0f} s\n")
    print("| rule | jobs | summed (s) | mean (s) | share of job time |")
    print("|---|---|---|---|---|")
    for rule, times in sorted(spans.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"| {rule} | {len(times)} | {sum(times):.0f} | {sum(times) / len(times):.1f} | "
            f"{100 * sum(times) / total:.0f}% |"
        )


if __name__ == "__main__":
    main(sys.argv[1])

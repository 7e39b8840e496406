#!/usr/bin/env python3
"""Self cost (instructions) per function from a callgrind output file, divided by a message count.

usage: callgrind_self.py CALLGRIND_OUT MESSAGES [TOP]

Prints the total instructions per message and the TOP functions by their own instructions
(inlined code counts where it was inlined). `callgrind_annotate` lists inclusive costs next to
self costs in this valgrind's output; this reads the file itself.
"""
import collections
import re
import sys


def self_costs(path):
    names, costs = {}, collections.Counter()
    current, after_call = None, False
    name_re = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(("fn=", "cfn=")):
                m = name_re.match(line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                if line.startswith("fn=") and m:
                    current = names.get(m.group(1), m.group(1))
                continue
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost, not the caller's own.
                after_call = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                if after_call:
                    after_call = False
                    continue
                try:
                    costs[current] += int(parts[1])
                except ValueError:
                    pass
    return costs


def main():
    path, messages = sys.argv[1], float(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    costs = self_costs(path)
    print(f"{sum(costs.values()) / messages:.0f} instructions per message ({path})")
    for name, cost in costs.most_common(top):
        print(f"{cost / messages:8.1f}  {name[:140]}")


if __name__ == "__main__":
    main()

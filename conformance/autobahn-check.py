"""Reads an Autobahn fuzzingclient index.json; exits 1 unless every case is OK.

INFORMATIONAL is accepted only for the cases the suite defines as informational (their
expected behaviour is undefined by RFC 6455): 7.1.6 and 7.13.*.
"""
import json
import sys
from collections import Counter

INFORMATIONAL_BY_DESIGN = ("7.1.6", "7.13.")


def main(path):
    with open(path) as f:
        index = json.load(f)
    bad, counts = [], Counter()
    for agent, cases in index.items():
        for case, result in sorted(cases.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
            outcome = (result["behavior"], result["behaviorClose"])
            counts[outcome] += 1
            ok = outcome == ("OK", "OK") or (
                case.startswith(INFORMATIONAL_BY_DESIGN) and set(outcome) <= {"OK", "INFORMATIONAL"}
            )
            if not ok:
                bad.append(f"{agent} {case}: behavior={outcome[0]} close={outcome[1]}")
    total = sum(counts.values())
    print(f"autobahn: {total} cases: " + ", ".join(f"{b}/{c}: {n}" for (b, c), n in sorted(counts.items())))
    if total == 0:
        print("autobahn: no cases ran", file=sys.stderr)
        return 1
    for line in bad:
        print("autobahn: NOT OK " + line, file=sys.stderr)
    print(f"autobahn: {total - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/autobahn/report/index.json"))

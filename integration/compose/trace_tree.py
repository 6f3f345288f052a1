#!/usr/bin/env python3
"""Reads one trace in Jaeger's JSON (from /api/traces) on stdin, checks that it
is one connected tree holding spans of every service named on the command
line (and, for each NAME=COUNT argument, at least COUNT spans named NAME), and
prints the tree: service, operation, start offset, duration."""

import json
import sys


def main() -> int:
    wanted = {arg for arg in sys.argv[1:] if "=" not in arg}
    counts = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
    answer = json.load(sys.stdin)
    traces = answer.get("data") or []
    if not traces:
        print("no trace", file=sys.stderr)
        return 1
    trace = traces[0]
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = {span["spanID"]: span for span in trace["spans"]}
    children = {}
    roots = []
    for span in sorted(spans.values(), key=lambda span: span["startTime"]):
        parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
        if parents and parents[0] in spans:
            children.setdefault(parents[0], []).append(span)
        else:
            roots.append(span)
    services = {processes[span["processID"]] for span in spans.values()}
    start = min(span["startTime"] for span in spans.values())

    def show(span, depth):
        service = processes[span["processID"]]
        offset = (span["startTime"] - start) / 1000
        print(f"{'  ' * depth}{service}: {span['operationName']}"
              f"  (+{offset:.2f} ms, {span['duration'] / 1000:.2f} ms)")
        for child in children.get(span["spanID"], []):
            show(child, depth + 1)

    print(f"trace {trace['traceID']}: {len(spans)} spans from {', '.join(sorted(services))}")
    for root in roots:
        show(root, 1)
    missing = wanted - services
    if missing:
        print(f"missing spans from: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    for name, count in counts.items():
        found = sum(1 for span in spans.values() if span["operationName"] == name)
        if found < int(count):
            print(f"{found} spans named {name!r}, wanted {count}", file=sys.stderr)
            return 1
    if len(roots) != 1:
        print(f"{len(roots)} roots: the spans do not form one tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

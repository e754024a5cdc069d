"""`python -m harness.slowest JUNIT.xml`: the slowest tests of a run and what they waited for.

A test's time (setup, call and teardown, from pytest's JUnit report) is split into its VM
starts, which the `vm_factory` fixture records (cold boots, restores by RAM path, template
boot-and-save, per backend), and the rest: the test body (guest commands, workloads,
scenarios, inner pytest runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TestTime:
    test_id: str
    seconds: float
    #: seconds per "kind/backend" of VM start
    starts: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    @property
    def body_s(self) -> float:
        return max(0.0, self.seconds - sum(self.starts.values()))

    def waits(self) -> str:
        parts = [f"{self.count[k]}x {k} {v:.1f}s" for k, v in sorted(self.starts.items(), key=lambda kv: -kv[1])]
        parts.append(f"test body {self.body_s:.1f}s")
        return ", ".join(parts)


def read_junit(path: Path) -> list[TestTime]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        test = TestTime(f"{case.get('classname', '')}::{case.get('name', '')}", float(case.get("time") or 0))
        starts: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for prop in case.iter("property"):
            if prop.get("name") != "vm_starts":
                continue
            for start in json.loads(prop.get("value") or "[]"):
                key = start["kind"] + ("" if start["backend"] == "qemu" else f"/{start['backend']}")
                starts[key] += start["seconds"]
                count[key] += 1
        test.starts, test.count = dict(starts), dict(count)
        tests.append(test)
    return tests


def render(tests: list[TestTime], top: int) -> str:
    slow = sorted(tests, key=lambda t: -t.seconds)[:top]
    total = sum(t.seconds for t in tests)
    lines = [f"{len(tests)} tests, {total / 60:.1f} min of test time; the {len(slow)} slowest:"]
    for test in slow:
        lines.append(f"{test.seconds:7.1f}s  {test.test_id}\n          {test.waits()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.slowest", description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path, help="pytest --junitxml file")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    if not args.junit.exists():
        print(f"{args.junit} does not exist: run the suite with --junitxml={args.junit} first "
              f"(make test PYTEST_ARGS=--junitxml={args.junit}).", file=sys.stderr)
        return 2
    print(render(read_junit(args.junit), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`make mutation`: mutation testing (mutmut) of the daemon's decision code, the classifier and
the scenario report, with the configuration in pyproject.toml ([tool.mutmut]).

Each mutant runs only the fast unit tests that reach the function it changes (mutmut's own
per-function selection, from the tests listed in pytest_add_cli_args_test_selection). Prints,
per module, the mutants killed, survived, untested and timed out, the score (killed or timed
out / all), and every survivor with its diff. Exit status 1 if a module scores below
--min-score. The survivors judged harmless, and why: tests/mutation-survivors.md.

    python3 ci/mutation.py [--min-score 90] [--keep] [--max-children N] [MUTANT ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
KILLED, SURVIVED, NO_TESTS, TIMEOUT = "killed", "survived", "no tests", "timeout"
# Inherited by everything this run starts, the tests' workers included.
RUN_MARKER = f"BH_MUTATION_RUN={os.getpid()}".encode()
# The cgroups a test session of tests/unit/intermediate makes are named after its pid (conftest.py).
SESSION_CGROUP = "bh-intermediate-test-"


def ours(pid: int) -> bool:
    try:
        return RUN_MARKER in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def session_cgroups() -> dict[Path, int]:
    """{cgroup: pid of the test session that made it}."""
    from harness.guest.intermediate.procs import cgroup2_mount

    mount = cgroup2_mount()
    if mount is None or not os.path.isdir(mount):
        return {}
    return {Path(e.path): int(e.name.removeprefix(SESSION_CGROUP)) for e in os.scandir(mount)
            if e.name.startswith(SESSION_CGROUP) and e.name.removeprefix(SESSION_CGROUP).isdigit()}


def end_our_processes() -> list[str]:
    ended = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid() or not ours(int(name)):
            continue
        pid = int(name)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if ours(pid):  # still the same process, now pinned by the pidfd
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    signal.pidfd_send_signal(pidfd, sig)
                ended.append(f"process {pid}")
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return ended


def remove_empty_cgroup(path: Path) -> bool:
    """Remove a dead session's cgroup once its (killed) tasks have left; never thaw or kill."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [path]:
        for _ in range(100):  # killed tasks take a moment to leave
            try:
                child.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
        else:
            return False
    return True


def clean_up(cgroups_before: set[Path], tmp: Path) -> list[str]:
    """A mutant that hangs is killed (SIGXCPU) together with its test session, whose fixtures then
    never run: its workers, cgroups and files stay behind. This run started them: the workers
    carry its marker, the files are in its own temporary folder, the cgroups are new and named
    after a session that is gone."""
    left = end_our_processes()
    for path, pid in session_cgroups().items():
        if path not in cgroups_before and not os.path.exists(f"/proc/{pid}"):
            left.append(str(path) if remove_empty_cgroup(path) else f"{path} (NOT removed: not empty)")
    shutil.rmtree(tmp, ignore_errors=True)
    return left


def run_mutmut(max_children: int | None, names: list[str]) -> None:
    log = MUTANTS / "mutmut-run.log"
    cmd = [str(Path(sys.executable).with_name("mutmut")), "run", *names]
    if max_children:
        cmd += ["--max-children", str(max_children)]
    MUTANTS.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bh-mutation-"))  # short: unix socket paths live in there
    env = {**os.environ, RUN_MARKER.decode().split("=")[0]: str(os.getpid()), "TMPDIR": str(tmp)}
    before = set(session_cgroups())
    try:
        with open(log.with_suffix(".tmp"), "wb") as out:  # mutmut copies mutants/ over itself at start
            code = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    finally:
        left = clean_up(before, tmp)
        if left:
            print(f"removed what killed test sessions left: {', '.join(left)}")
    shutil.move(log.with_suffix(".tmp"), log)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut run failed (exit {code}); the end of {log}:\n{tail}")


def results() -> dict[str, dict[str, str]]:
    """{source file: {mutant name: status}} from mutmut's result files."""
    os.chdir(ROOT)  # mutmut's API works relative to the project root
    from mutmut.__main__ import SourceFileMutationData, walk_mutatable_files
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, str]] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        if data.exit_code_by_key:
            found[str(path)] = {k: status_by_exit_code[v] for k, v in data.exit_code_by_key.items()}
    return found


def diff(name: str, path: str) -> str:
    from mutmut.__main__ import get_diff_for_mutant

    return get_diff_for_mutant(name, path=path).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-score", type=float, default=90.0, help="per module, in %% (default 90)")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ (results of unchanged functions)")
    parser.add_argument("--max-children", type=int, help="parallel mutants (default: one per CPU)")
    parser.add_argument("--report-only", action="store_true", help="print the last run's results")
    parser.add_argument("mutants", nargs="*", help="only these mutants (names or globs, as printed)")
    args = parser.parse_args()
    if not args.report_only:
        if not args.keep:
            shutil.rmtree(MUTANTS, ignore_errors=True)
        run_mutmut(args.max_children, args.mutants)

    found = results()
    if not found:
        print("no mutation results (run without --report-only)")
        return 1
    low = []
    print(f"{'module':48} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'timeout':>7} {'score':>6}")
    for path, statuses in sorted(found.items()):
        counts = Counter(statuses.values())
        total = len(statuses)
        score = 100.0 * (counts[KILLED] + counts[TIMEOUT]) / total
        other = total - sum(counts[s] for s in (KILLED, SURVIVED, NO_TESTS, TIMEOUT))
        note = f"  ({other} other: {', '.join(s for s in counts if s not in (KILLED, SURVIVED, NO_TESTS, TIMEOUT))})" if other else ""
        print(f"{path:48} {total:7} {counts[KILLED]:6} {counts[SURVIVED]:8} {counts[NO_TESTS]:8} {counts[TIMEOUT]:7} "
              f"{score:5.1f}%{note}")
        if score < args.min_score:
            low.append(f"{path} ({score:.1f}%)")
    for path, statuses in sorted(found.items()):
        alive = [name for name, status in statuses.items() if status not in (KILLED, TIMEOUT, "not checked")]
        if not alive:
            continue
        print(f"\n== {path}: {len(alive)} not killed (tests/mutation-survivors.md says which are harmless)")
        for name in alive:
            print(f"\n-- {name} ({statuses[name]})\n{diff(name, path)}")
    if low:
        print(f"\nbelow {args.min_score:g}%: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: `run`, `status`, `resume-all`, `replay`, `held` (and the internal `watchdog`).

Every user error is reported as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence

from .config import (
    DEFAULT_STATE_DIR,
    PSI_MEMORY_PATH,
    DaemonConfig,
    FreezeMethod,
    PageOutVia,
    Selection,
    Thresholds,
)

PROG = "intermediate"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _number(text: str, what: str = "a number") -> float:
    """A finite float: nan compares false with everything (--hold nan never resumed) and inf
    is no duration."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _percent(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage between 0 and 100, got {text}")
    return value


def _non_negative(what: str) -> Callable[[str], float]:
    """An argparse type: a number >= 0; `what` names it in the error."""

    def parse(text: str) -> float:
        value = _number(text, what)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
        return value

    return parse


_seconds = _non_negative("a number of seconds")
_factor = _non_negative("a number")


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}")
    return value


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="stderr log level (default INFO)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Stop distinct processes while the balloon squeezes memory.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the daemon")
    src = run.add_argument_group("pressure")
    src.add_argument("--pressure-file", metavar="PATH", help="poll this PSI-format file instead of PSI triggers")
    src.add_argument("--psi-path", metavar="PATH", default=PSI_MEMORY_PATH, help=argparse.SUPPRESS)
    src.add_argument("--window", type=_seconds, default=1.0, metavar="S", help="fast-signal window, 0.5-10 s (default 1)")
    src.add_argument("--stop-above", type=_percent, default=20.0, metavar="P", help="stop when pressure >= P %% (default 20)")
    src.add_argument("--resume-below", type=_percent, default=5.0, metavar="P", help="calm when pressure < P %% (default 5)")
    src.add_argument("--hold", type=_seconds, default=2.0, metavar="S", help="calm needed before resuming (default 2)")
    act = run.add_argument_group("actions")
    act.add_argument("--stop-interval", type=_seconds, default=1.0, metavar="S", help="time between two stops or resumes (default 1)")
    act.add_argument("--resume-headroom", type=_factor, default=1.0, metavar="F", help="resume only if MemAvailable >= F x VmSwap + reserve; 0 disables (default 1)")
    act.add_argument("--resume-grace", type=_seconds, default=5.0, metavar="S", help="after a resume, only avg10 >= stop-above stops again for S seconds (default 5)")
    act.add_argument("--resume-reserve", type=_factor, default=64.0, metavar="MIB", help="MemAvailable to keep after a resume's swap-in (default 64)")
    act.add_argument("--max-stopped", type=_seconds, default=None, metavar="S", help="resume any process stopped for S seconds")
    act.add_argument("--method", choices=[m.value for m in FreezeMethod], default="signal", help="signal (SIGSTOP/SIGCONT, default) or cgroup (cgroup.freeze)")
    act.add_argument("--min-rss", type=_factor, default=16.0, metavar="MIB", help="do not stop a unit smaller than this while one at least this big is stopped; 0 disables (default 16)")
    act.add_argument("--page-out", action=argparse.BooleanOptionalAction, default=True, help="reclaim a stopped unit's memory at once (default on)")
    act.add_argument("--page-out-via", choices=[v.value for v in PageOutVia], default="auto", help=argparse.SUPPRESS)
    act.add_argument("--blocked-report-interval", type=_seconds, default=5.0, metavar="S", help=argparse.SUPPRESS)
    src.add_argument("--early-fraction", type=_factor, default=0.5, metavar="F", help=argparse.SUPPRESS)
    act.add_argument("--dry-run", action="store_true", help="log decisions, never signal")
    sel = run.add_argument_group("selection")
    sel.add_argument("--protect-pid", type=_pid, action="append", default=[], metavar="PID")
    sel.add_argument("--protect-cgroup", action="append", default=[], metavar="PATH")
    sel.add_argument("--protect-comm", action="append", default=[], metavar="NAME", help="comm, or basename of argv[0]/argv[1]")
    sel.add_argument("--never-stop", action="append", default=[], metavar="COMM")
    sel.add_argument("--never-stop-cgroup", action="append", default=[], metavar="PATH")
    sel.add_argument("--scope-pid", type=_pid, metavar="PID", help="only consider descendants of PID")
    sel.add_argument("--scope-cgroup", metavar="PATH", help="only consider this cgroup subtree")
    io = run.add_argument_group("files")
    io.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR")
    io.add_argument("--events", metavar="FILE", help="append JSONL events here")
    io.add_argument("--control", metavar="PATH", help="unix socket for `status`")
    io.add_argument("--rescan-interval", type=_seconds, default=2.0, metavar="S", help=argparse.SUPPRESS)
    io.add_argument("--mlock", action="store_true", help="mlockall() the daemon so it does not stall itself")
    _add_log_level(run)

    status = sub.add_parser("status", help="ask a running daemon for its status (JSON)")
    status.add_argument("--control", required=True, metavar="PATH")
    status.add_argument("--timeout", type=_seconds, default=5.0, metavar="S")
    _add_log_level(status)

    resume = sub.add_parser("resume-all", help="resume every process recorded in a state dir")
    resume.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR")
    resume.add_argument("--events", metavar="FILE")
    _add_log_level(resume)

    replay = sub.add_parser("replay", help="re-derive a run's decisions from its event log; exit 1 on a difference")
    replay.add_argument("events", metavar="EVENTS.jsonl")
    replay.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE",
                        help="try a changed rule, e.g. hold=3, stop_above=30, resume_headroom=0 (repeatable)")
    replay.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_log_level(replay)

    held = sub.add_parser("held", help="list stopped processes and tasks of frozen cgroups (JSON)")
    _add_log_level(held)

    watchdog = sub.add_parser("watchdog", help="(internal) resume everything when the daemon dies")
    watchdog.add_argument("--parent-pid", type=_pid, required=True)
    watchdog.add_argument("--state-dir", required=True)
    watchdog.add_argument("--events")
    _add_log_level(watchdog)
    return parser


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    from .procs import cgroup2_mount, normalize_cgroup, read_stat

    mount = cgroup2_mount()
    needs_cgroup = args.protect_cgroup or args.never_stop_cgroup or args.scope_cgroup or args.method == "cgroup"
    if needs_cgroup and mount is None:
        raise UsageError("no cgroup2 hierarchy is mounted (needed for cgroup options / --method cgroup)")

    def cg(path: str) -> str:
        return normalize_cgroup(path, mount)

    scope_stat = read_stat(args.scope_pid) if args.scope_pid is not None else None
    if args.scope_pid is not None and (scope_stat is None or scope_stat.is_zombie):
        raise UsageError(f"--scope-pid {args.scope_pid}: no such process")
    if args.scope_cgroup is not None and mount is not None:
        if not os.path.isdir(mount.rstrip("/") + cg(args.scope_cgroup)):
            raise UsageError(f"--scope-cgroup {args.scope_cgroup}: no such cgroup under {mount}")
    config = DaemonConfig(
        thresholds=Thresholds(stop_above=args.stop_above, resume_below=args.resume_below, hold=args.hold),
        selection=Selection(
            protect_pids=tuple(args.protect_pid),
            protect_cgroups=tuple(cg(p) for p in args.protect_cgroup),
            protect_comms=tuple(args.protect_comm),
            never_stop_comms=tuple(args.never_stop),
            never_stop_cgroups=tuple(cg(p) for p in args.never_stop_cgroup),
            scope_pid=args.scope_pid,
            scope_starttime=scope_stat.starttime if scope_stat is not None else None,
            scope_cgroup=cg(args.scope_cgroup) if args.scope_cgroup else None,
        ),
        pressure_file=args.pressure_file,
        psi_path=args.psi_path,
        window=args.window,
        stop_interval=args.stop_interval,
        resume_headroom=args.resume_headroom,
        resume_reserve_kb=int(args.resume_reserve * 1024),
        resume_grace=args.resume_grace,
        max_stopped=args.max_stopped,
        method=FreezeMethod(args.method),
        min_rss_kb=int(args.min_rss * 1024),
        page_out=args.page_out,
        page_out_via=PageOutVia(args.page_out_via),
        blocked_report_interval=args.blocked_report_interval,
        early_fraction=args.early_fraction,
        state_dir=args.state_dir,
        events_path=args.events,
        control_path=args.control,
        dry_run=args.dry_run,
        rescan_interval=args.rescan_interval,
        mlock=args.mlock,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s intermediate[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from .actions import StartupError
    from .control import ControlError
    from .daemon import run_daemon
    from .state import StateError

    config = config_from_args(args)
    try:
        return run_daemon(config, args.log_level)
    except (StartupError, StateError, ControlError) as exc:
        raise UsageError(str(exc)) from None


def _cmd_status(args: argparse.Namespace) -> int:
    from .control import ControlError, request

    try:
        answer = request(args.control, "status", timeout=args.timeout)
    except ControlError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0


def _cmd_resume_all(args: argparse.Namespace) -> int:
    from .events import EventLog
    from .recovery import resume_recorded
    from .state import StateStore

    if not os.path.isdir(args.state_dir):
        print(json.dumps({"resumed": [], "gone": [], "recycled": [], "failed": [], "errors": [], "note": "no state dir"}))
        return 0
    events = EventLog(args.events)
    try:
        result, remaining = resume_recorded(StateStore(args.state_dir), events, "resume-all")
    finally:
        events.close()
    print(
        json.dumps(
            {
                "resumed": [m.pid for m in result.done],
                "gone": [m.pid for m in result.gone],
                "recycled": [m.pid for m in result.recycled],
                "failed": [m.pid for m in result.failed],
                "errors": result.errors,
            }
        )
    )
    return 1 if remaining else 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import main as replay_main

    return replay_main(args.events, args.rule, args.json)


def _cmd_held(args: argparse.Namespace) -> int:
    from .held import held

    print(json.dumps(held(), sort_keys=True))
    return 0


def _cmd_watchdog(args: argparse.Namespace) -> int:
    from .watchdog import run_watchdog

    return run_watchdog(args.parent_pid, args.state_dir, args.events)


COMMANDS = {"run": _cmd_run, "status": _cmd_status, "resume-all": _cmd_resume_all, "replay": _cmd_replay,
            "held": _cmd_held, "watchdog": _cmd_watchdog}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _setup_logging(args.log_level)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

#!/usr/bin/env python3
"""Benchmark of the Intermediate daemon: reaction time and CPU use at idle.

* File mode (runs anywhere): a fake PSI file steps from 0 to --step % stall (total advancing at
  that rate, avg10 following the kernel's lagging average, so only the fast signal can react);
  the reaction time is the time until the victim process is seen in state T.
* Idle CPU: utime+stime of the daemon and its watchdog from /proc/PID/stat over --idle-seconds,
  in file mode (~11 file reads a second while idle) and, where a PSI trigger can be registered, in PSI mode;
  `idle_cpu_percent` is the PSI mode (what the guest runs) when available, else the file mode.
* Watchdog (--watchdog-trials): SIGKILL the daemon while it holds a stopped victim; the time
  until the victim runs again (its watchdog's resume).
* --psi (inside a guest): real memory pressure from a hog process; the reaction time is measured
  from the moment the real stall in the trailing window crosses the threshold (when a perfect
  detector with the same rule could first react) to the daemon's stop event.  Do not use --psi
  on a host you care about: the hog allocates beyond MemAvailable.

Everything runs with --scope-pid <this process>, so only the benchmark's own children can be
stopped.  The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness.guest.intermediate.config import PSI_MEMORY_PATH as PSI_PATH  # noqa: E402
from harness.guest.intermediate.control import ControlError, request  # noqa: E402
from harness.guest.intermediate.core import CoreState, Decision, Rules, decide  # noqa: E402
from harness.guest.intermediate.events import read_events  # noqa: E402
from harness.guest.intermediate.fakepsi import AVG_KERNEL, PressureFileWriter  # noqa: E402
from harness.guest.intermediate.pressure import parse_psi, read_small_file  # noqa: E402
from harness.guest.intermediate.procs import read_state as proc_state  # noqa: E402
from harness.guest.intermediate.snapshot import InputDecoder  # noqa: E402
from harness.guest.sampler import read_kv  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

VICTIM_CODE = "import time\nwhile True:\n    time.sleep(0.05)\n"
HOG_CODE = """
import os, sys, time
with open('/proc/self/oom_score_adj', 'w') as f:
    f.write('1000')  # if anything is OOM-killed, let it be the hog
chunk, max_mb, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
while len(held) * chunk < max_mb:
    buf = bytearray(chunk * 1024 * 1024)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    held.append(buf)
    time.sleep(pause)
while True:
    for buf in held:  # keep the working set hot, so it keeps stalling until stopped
        for i in range(0, len(buf), 4096 * 16):
            buf[i] = 2
    time.sleep(0.01)
"""


# -- helpers --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14 (utime) and 15 (stime)


def wait_until(predicate, timeout: float, interval: float = 0.001) -> float | None:
    """Seconds until predicate() held, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[subprocess.Popen] = []
        self.daemons: list[subprocess.Popen] = []
        self.env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.env.pop("BALLOON_HARNESS_CONTROL", None)

    def spawn(self, code: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        self.children.append(proc)
        return proc

    def daemon(self, name: str, *args: str, state_dir: Path | None = None) -> tuple[subprocess.Popen, Path, Path]:
        events = self.workdir / f"{name}-events.jsonl"
        control = self.workdir / f"{name}.sock"
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "harness.guest.intermediate", "run",
                "--scope-pid", str(os.getpid()),
                "--state-dir", str(state_dir or self.workdir / f"{name}-state"),
                "--events", str(events),
                "--control", str(control),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
            cwd=str(REPO_ROOT),
        )
        log.close()
        self.daemons.append(proc)
        started = wait_until(lambda: any(e["event"] == "start" for e in read_events(str(events))) or proc.poll() is not None, 15, 0.02)
        if started is None or proc.poll() is not None:
            raise RuntimeError(f"daemon {name} did not start: {(self.workdir / f'{name}.log').read_text()[-2000:]}")
        return proc, events, control

    def stop_daemon(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        for proc in self.daemons:
            self.stop_daemon(proc)
        for proc in self.children:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            proc.wait()


def sched_seconds(pid: int) -> float | None:
    """Exact on-CPU time from /proc/PID/schedstat (utime+stime are sampled at clock ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def idle_cpu(pids: list[int], seconds: float) -> tuple[float, float | None]:
    """(% from utime+stime, % from schedstat or None) of the pids over `seconds`."""
    before = sum(cpu_seconds(p) for p in pids)
    sched_before = [sched_seconds(p) for p in pids]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    ticks = (sum(cpu_seconds(p) for p in pids) - before) / elapsed * 100.0
    sched_after = [sched_seconds(p) for p in pids]
    if None in sched_before or None in sched_after:
        return ticks, None
    exact = (sum(sched_after) - sum(sched_before)) / elapsed * 100.0  # type: ignore[arg-type]
    return ticks, exact


def wait_calm(control: Path, timeout: float) -> bool:
    def calm() -> bool:
        try:
            status = request(str(control), "status", timeout=2)
        except ControlError:
            return False
        return status["state"] == "calm" and status["level"] == "calm"

    return wait_until(calm, timeout, 0.1) is not None


def decision_times(events: list[dict]) -> dict:
    """The decision core alone, on the inputs the daemon logged (decode first, then time decide()),
    apart from the OS latency the daemon measured in its stop events (scan + classification,
    recording the state file, the signal)."""
    start = next(e for e in events if e["event"] == "start")
    rules, decoder = Rules.from_dict(start["rules"]), InputDecoder()
    state, core_us = CoreState(), []
    for record in (e for e in events if e["event"] == "input" and "release" not in e):
        obs = decoder.decode(record)
        started = time.perf_counter()
        result = decide(state, rules, obs)
        core_us.append((time.perf_counter() - started) * 1e6)
        if isinstance(result, Decision):
            state = result.state
    stops = [e["timing_ms"] for e in events if e["event"] == "stop" and "timing_ms" in e]

    def median_of(key: str) -> float | None:
        values = [t[key] for t in stops if key in t]
        return round(statistics.median(values), 3) if values else None

    return {
        "decision_us_median": round(statistics.median(core_us), 1) if core_us else None,
        "decision_us_p95": round(percentile(core_us, 95), 1) if core_us else None,
        "decision_inputs": len(core_us),
        "stop_decide_ms_median": median_of("decide"),
        "stop_scan_ms_median": median_of("scan"),
        "stop_record_ms_median": median_of("record"),
        "stop_signal_ms_median": median_of("signal"),
        # Stops that found their scan ready (taken when the early PSI trigger fired), and its age.
        "stops_with_prepared_scan": f"{sum('prepared_age' in t for t in stops)}/{len(stops)}",
        "stop_prepared_age_ms_median": median_of("prepared_age"),
    }


# -- file mode ------------------------------------------------------------------------------------


def bench_file(bench: Bench, trials: int, step: float, idle_seconds: float, avg_model: str) -> dict:
    writer = PressureFileWriter(str(bench.workdir / "pressure"), avg_model=avg_model).start()
    try:
        victim = bench.spawn(VICTIM_CODE)
        # Every trial follows the previous trial's resume; without --resume-grace 0 the figure
        # would be the grace (a spike right after a resume does not stop), not the reaction.
        daemon, events, control = bench.daemon("file", "--pressure-file", writer.path, "--hold", "0.5",
                                                "--resume-grace", "0")
        time.sleep(1.5)  # let the daemon's fast window fill once, so trial 0 is like the others
        reactions = []
        for trial in range(trials):
            time.sleep(0.2 + 0.05 * (trial % 4))  # vary the phase against the daemon's 50 ms polling
            changed = writer.set(step)
            reacted = wait_until(lambda: proc_state(victim.pid) == "T", 10)
            if reacted is None:
                raise RuntimeError("the daemon did not stop the victim within 10 s")
            reactions.append((time.monotonic() - changed) * 1000 - 0.5)  # minus half the sampling step
            writer.set(0)
            if wait_until(lambda: proc_state(victim.pid) != "T", 60, 0.01) is None or not wait_calm(control, 60):
                raise RuntimeError("the daemon did not resume the victim")
        watchdog = next(e["watchdog_pid"] for e in read_events(str(events)) if e["event"] == "start")
        wait_calm(control, 60)
        time.sleep(3.0)  # past the last resume's bookkeeping: idle, not winding down
        idle, idle_exact = idle_cpu([daemon.pid, watchdog], idle_seconds)
        bench.stop_daemon(daemon)
        # Gone before the PSI trials: there the hog alone is to be stopped.
        victim.kill()
        victim.wait()
    finally:
        writer.stop()
    return {
        **decision_times(read_events(str(events))),
        "reaction_ms": reactions,
        "reaction_ms_file_median": round(statistics.median(reactions), 1),
        "reaction_ms_file_p95": round(percentile(reactions, 95), 1),
        "idle_cpu_percent_file_mode": round(idle, 3),
        "idle_cpu_percent_file_mode_schedstat": None if idle_exact is None else round(idle_exact, 3),
    }


def watchdog_waiting(pid: int) -> bool:
    """Is the watchdog asleep in poll(2) on the daemon's pidfd (x86_64 syscall 7, no timeout)?"""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 3 and fields[0] == "7" and int(fields[3], 16) & 0xFFFFFFFF == 0xFFFFFFFF


def watchdog_trial(bench: Bench, pressure: str, name: str) -> float:
    """One SIGKILLed daemon: ms from the kill to its stopped victim running again."""
    victim = bench.spawn(VICTIM_CODE)
    daemon, events, _ = bench.daemon(name, "--pressure-file", pressure)
    watchdog = next(e["watchdog_pid"] for e in read_events(str(events)) if e["event"] == "start")
    if wait_until(lambda: proc_state(victim.pid) == "T", 10) is None or wait_until(
            lambda: watchdog_waiting(watchdog), 10) is None:
        raise RuntimeError("no stop, or no watchdog waiting, within 10 s")
    killed = time.monotonic()
    daemon.kill()
    if wait_until(lambda: proc_state(victim.pid) != "T", 10) is None:
        raise RuntimeError("the watchdog did not resume the victim within 10 s")
    latency = (time.monotonic() - killed) * 1000
    daemon.wait()
    victim.kill()  # the next trial's daemon must find its own victim alone
    victim.wait()
    return latency


def bench_watchdog(bench: Bench, trials: int) -> dict:
    """From SIGKILL of the daemon to its stopped victim running again (the watchdog's resume)."""
    writer = PressureFileWriter(str(bench.workdir / "pressure-watchdog")).start()
    try:
        writer.set(60)
        latencies = [watchdog_trial(bench, writer.path, f"watchdog-{trial}") for trial in range(trials)]
    finally:
        writer.stop()
    return {"watchdog_resume_ms": latencies, "watchdog_resume_ms_median": round(statistics.median(latencies), 1)}


# -- PSI mode -------------------------------------------------------------------------------------


def psi_trigger_available() -> bool:
    from harness.guest.intermediate.pressure import register_psi_trigger

    try:
        fd, _ = register_psi_trigger(PSI_PATH, 20, 1.0)
    except (OSError, ValueError):
        return False
    os.close(fd)
    return True


def bench_psi_idle(bench: Bench, idle_seconds: float) -> tuple[float | None, float | None]:
    if not psi_trigger_available():
        return None, None
    daemon, events, control = bench.daemon("psi-idle")
    watchdog = next(e["watchdog_pid"] for e in read_events(str(events)) if e["event"] == "start")
    # Idle means after start-up: in an emulated guest, importing and the first /proc scan of
    # the daemon and its watchdog take seconds, which are not the idle cost.
    wait_calm(control, 60)
    time.sleep(3.0)
    idle, exact = idle_cpu([daemon.pid, watchdog], idle_seconds)
    bench.stop_daemon(daemon)
    return round(idle, 3), None if exact is None else round(exact, 3)


class StallSampler(threading.Thread):
    """Samples `some total` of /proc/pressure/memory every 10 ms (wall time)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.samples.append((time.time(), parse_psi(read_small_file(PSI_PATH)).some.total))
            time.sleep(0.01)

    def threshold_crossed_at(self, stop_above: float, window: float) -> float | None:
        need = stop_above / 100.0 * window * 1e6
        j = 0
        for t, total in self.samples:
            while self.samples[j][0] < t - window:
                j += 1
            if total - self.samples[j][1] >= need:
                return t
        return None

    def onset_at(self) -> float | None:
        first = self.samples[0][1] if self.samples else 0
        for t, total in self.samples:
            if total > first:
                return t
        return None


def bench_psi_reaction(bench: Bench, trials: int, stop_above: float, window: float, extra: list[str] = ()) -> dict:
    result: dict = {"reaction_ms_psi_trigger_median": None, "psi_notes": []}
    if not psi_trigger_available():
        result["psi_notes"].append("cannot register a PSI trigger on /proc/pressure/memory")
        return result
    # As balloon-intermediate.service runs it: mlocked (no page faults of its own under the
    # pressure it measures) and its state dir on tmpfs (/run), where recording a stop costs no
    # disk write -- in the guest the bench's temporary dir is on the root disk.
    run_dir = Path("/run") if os.path.isdir("/run") and os.access("/run", os.W_OK) else None
    state_dir = Path(tempfile.mkdtemp(prefix="bench-intermediate-", dir=run_dir)) if run_dir else None
    result["psi_daemon"] = " ".join(["--mlock", *extra]) + f", state dir {'on /run' if state_dir else 'in the temporary dir'}"
    try:
        daemon, events, control = bench.daemon(
            "psi", "--stop-above", str(stop_above), "--window", str(window), "--hold", "1", "--resume-headroom", "0",
            "--resume-grace", "0",  # as in file mode: measure the reaction, not the post-resume grace
            "--mlock", *extra, state_dir=state_dir,
        )
        return _psi_trials(bench, result, daemon, events, control, trials, stop_above, window)
    finally:
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def _psi_trials(bench: Bench, result: dict, daemon: subprocess.Popen, events: Path, control: Path, trials: int,
                stop_above: float, window: float) -> dict:
    reactions, onsets, detect, act = [], [], [], []
    for trial in range(trials):
        meminfo = read_kv("/proc/meminfo")
        available_mb = meminfo.get("MemAvailable", 0) // 1024
        swap_mb = meminfo.get("SwapFree", 0) // 1024
        budget = available_mb + max(128, swap_mb // 4)
        sampler = StallSampler()
        sampler.start()
        hog = bench.spawn(HOG_CODE, "16", str(budget), "0.025")
        stop = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and hog.poll() is None:
            stop = next((e for e in read_events(str(events)) if e["event"] == "stop" and hog.pid in e.get("pids", [])), None)
            if stop:
                break
            time.sleep(0.05)
        sampler.stop_flag.set()
        sampler.join()
        hog.send_signal(signal.SIGKILL)
        hog.wait()
        if stop is None:
            result["psi_notes"].append(f"trial {trial}: hog {'died' if hog.returncode else 'was not stopped'} (no stop event)")
            continue
        crossed = sampler.threshold_crossed_at(stop_above, window)
        onset = sampler.onset_at()
        if crossed is not None:
            reactions.append((stop["t"] - crossed) * 1000)
            # Where it went: crossing -> the tick that decided the stop began (kernel trigger,
            # wake-up), and that tick -> the stop event (scan, decide, record, signal).
            tick = max((e["t"] for e in read_events(str(events)) if e["event"] == "input" and e["t"] <= stop["t"]),
                       default=None)
            if tick is not None:
                detect.append((tick - crossed) * 1000)
                act.append((stop["t"] - tick) * 1000)
        if onset is not None:
            onsets.append((stop["t"] - onset) * 1000)
        wait_calm(control, 90)
    bench.stop_daemon(daemon)
    # Where the daemon's part went, for the stops under real pressure (scan, record, signal...).
    result.update({f"psi_{key}": value for key, value in decision_times(read_events(str(events))).items()})
    if reactions:
        result["reaction_ms_psi_trigger_median"] = round(statistics.median(reactions), 1)
        result["reaction_ms_psi_trigger_p95"] = round(percentile(reactions, 95), 1)
        result["reaction_ms_psi_trigger_all"] = [round(r, 1) for r in reactions]
    if detect:
        result["psi_detect_ms_median"] = round(statistics.median(detect), 1)
        result["psi_act_ms_median"] = round(statistics.median(act), 1)
    if onsets:
        result["psi_stall_onset_to_stop_ms_median"] = round(statistics.median(onsets), 1)
    result["psi_trials_ok"] = len(reactions)
    return result


def fmt_cpu(ticks: float | None, exact: float | None) -> str:
    if ticks is None:
        return "n/a (no PSI trigger)"
    text = f"{ticks:.3f} % (utime+stime)"
    return text + (f", {exact:.3f} % (schedstat)" if exact is not None else "")


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="file-mode reaction trials (default 10)")
    parser.add_argument("--step", type=float, default=60.0, help="stall %% the fake PSI file steps to (default 60)")
    parser.add_argument("--avg-model", choices=["kernel", "steady"], default=AVG_KERNEL, help="avg10 of the fake file")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--psi", action="store_true", help="also measure the reaction to real memory pressure (guest only)")
    parser.add_argument("--psi-trials", type=int, default=3)
    parser.add_argument("--keep-events", metavar="DIR", help="copy the daemons' event logs here (to analyse a run)")
    parser.add_argument("--psi-only", action="store_true", help="only the reaction to real memory pressure (guest only)")
    parser.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                        help="an extra option for the PSI-mode daemon, e.g. --daemon-arg=--early-fraction=0 (repeatable)")
    parser.add_argument("--watchdog-trials", type=int, default=5, help="SIGKILLed daemons (default 5)")
    args = parser.parse_args()

    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-intermediate-") as tmp:
        bench = Bench(Path(tmp))
        try:
            if not args.psi_only:
                result = bench_file(bench, args.trials, args.step, args.idle_seconds, args.avg_model)
                result.update(bench_watchdog(bench, args.watchdog_trials))
                psi_idle, psi_idle_exact = bench_psi_idle(bench, args.idle_seconds)
                # The guest runs the daemon on PSI triggers: that is the idle cost that matters.
                # Where no trigger can be registered, report the file mode instead.
                result["idle_cpu_mode"] = "psi-trigger" if psi_idle is not None else "file"
                result["idle_cpu_percent"] = psi_idle if psi_idle is not None else result["idle_cpu_percent_file_mode"]
                result["idle_cpu_percent_psi_mode"] = psi_idle
                result["idle_cpu_percent_psi_mode_schedstat"] = psi_idle_exact
            if args.psi or args.psi_only:
                result.update(bench_psi_reaction(bench, args.psi_trials, 20.0, 1.0, args.daemon_arg))
        finally:
            bench.cleanup()
            if args.keep_events:
                os.makedirs(args.keep_events, exist_ok=True)
                for log in Path(tmp).glob("*-events.jsonl"):
                    shutil.copy(log, args.keep_events)

    reactions = result.pop("reaction_ms", None)
    watchdog = result.pop("watchdog_resume_ms", None)
    rows = [] if reactions is None or watchdog is None else [
        ("file mode: step to", f"{args.step:g} % stall (avg10 model: {args.avg_model}), window 1 s, stop-above 20"),
        ("file mode: trials", str(len(reactions))),
        ("file mode: reaction median", f"{result['reaction_ms_file_median']:.1f} ms"),
        ("file mode: reaction p95", f"{result['reaction_ms_file_p95']:.1f} ms"),
        ("file mode: reaction min/max", f"{min(reactions):.1f} / {max(reactions):.1f} ms"),
        ("decision core alone (median / p95)", f"{result['decision_us_median']} / {result['decision_us_p95']} µs "
                                               f"over {result['decision_inputs']} logged inputs"),
        ("a stop: decide / scan / record / signal", f"{result['stop_decide_ms_median']} / {result['stop_scan_ms_median']} / "
                                                    f"{result['stop_record_ms_median']} / {result['stop_signal_ms_median']} ms (medians)"),
        ("watchdog: SIGKILL -> resumed (median, min/max)", f"{result['watchdog_resume_ms_median']:.1f} ms, "
                                                           f"{min(watchdog):.1f} / {max(watchdog):.1f} ms over {len(watchdog)}"),
        ("idle CPU, file mode (~11 reads/s idle)", fmt_cpu(result["idle_cpu_percent_file_mode"], result["idle_cpu_percent_file_mode_schedstat"])),
        ("idle CPU, PSI-trigger mode (guest mode)", fmt_cpu(result["idle_cpu_percent_psi_mode"], result["idle_cpu_percent_psi_mode_schedstat"])),
    ]
    if args.psi or args.psi_only:
        value = result.get("reaction_ms_psi_trigger_median")
        rows.append(("PSI mode: reaction median (real stall)", "n/a" if value is None else f"{value:.1f} ms"))
        if value is not None:
            rows.append(("PSI mode: reaction, every trial", ", ".join(f"{r:.0f}" for r in result["reaction_ms_psi_trigger_all"]) + " ms"))
        rows.append(("PSI mode: a stop: scan / record / signal", f"{result.get('psi_stop_scan_ms_median')} / "
                     f"{result.get('psi_stop_record_ms_median')} / {result.get('psi_stop_signal_ms_median')} ms (medians); "
                     f"scan prepared by the early trigger: {result.get('psi_stops_with_prepared_scan')}"))
        if result.get("psi_detect_ms_median") is not None:
            rows.append(("PSI mode: crossing -> deciding tick / tick -> stop", f"{result['psi_detect_ms_median']} / "
                                                                             f"{result['psi_act_ms_median']} ms (medians)"))
        for note in result.get("psi_notes", []):
            rows.append(("PSI mode: note", note))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not (args.psi or args.psi_only):
        result.pop("psi_notes", None)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

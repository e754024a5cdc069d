"""Running a scenario: set up the host budget, boot (or restore) every guest together, start
the workloads, let the balloon policy act, record everything as it happens, and leave a run
folder that someone can attach to a bug report (see harness.scenario.evidence).

The host decides only what a host can: when to start a workload and, through the balloon
policy, where each balloon goes (from the balloon's statistics and the budget cgroup, never
SSH). Every pressure decision inside a guest is made by its Intermediate daemon, because
under real overcommit a guest can stop answering SSH for a minute.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.accel import TCG_TB_SIZE_BUDGET_MIB
from harness.balloon import BalloonController
from harness.config import Backend
from harness.envfacts import FACTS_FILE, gather
from harness.errors import HarnessError
from harness.host.budget import HostBudget
from harness.host.placement import Placement
from harness.machine.base import Machine
from harness.machine.factory import MachineFactory
from harness.machine.sharedram import RamMode
from harness.scenario.evidence import HARNESS_EVENTS, HOST_LEDGER, RUN_META, JsonlAppender
from harness.scenario.guest import GuestDriver
from harness.scenario.monitor import GuestHandle, HostMonitor
from harness.scenario.policyrun import PolicyLoop, policy_for
from harness.scenario.rebuild import SUMMARY, build_report
from harness.scenario.repeat import aggregate, group_runs, judged
from harness.scenario.report import ExpectationResult
from harness.scenario.spec import GuestSection, Scenario
from harness.scenario.table import verdict
from harness.scenario.variants import Variant, parse_variant

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class RunResult:
    scenario: Scenario
    mode: str
    folder: Path
    summary: dict
    expectations: list[ExpectationResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.expectations) and "error" not in self.summary

    def failures(self) -> list[ExpectationResult]:
        failed = [e for e in self.expectations if not e.passed]
        if "error" in self.summary:
            failed.append(ExpectationResult("run", False, self.summary["error"]))
        return failed


class ScenarioRunner:
    def __init__(self, scenario: Scenario, factory: MachineFactory, folder: Path, *,
                 variant: Variant | None = None, progress: Progress = lambda _m: None) -> None:
        self.original = scenario
        self.variant = variant
        self.scenario = variant.apply(scenario) if variant else scenario
        self.factory = factory
        self.folder = folder
        self.label = variant.label if variant else "as written"
        self.tag = variant.name if variant else "scenario"
        self.progress = progress
        self.meta: dict = {}
        self._events: JsonlAppender | None = None
        self._guests_started = False

    def _record(self, event: dict) -> None:
        event = {"t": round(time.time(), 3), **event}
        if self._events is not None:
            self._events.write(event)
        log.info("%s", event)

    def _say(self, text: str) -> None:
        self.progress(f"[{self.tag}] {text}")

    def _write_meta(self, **changes) -> None:
        self.meta.update(changes)
        tmp = self.folder / (RUN_META + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n")
        tmp.replace(self.folder / RUN_META)

    # -- the run ------------------------------------------------------------------------
    def run(self) -> RunResult:
        sc = self.scenario
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "scenario.toml").write_text(self.original.text)
        self._write_facts()
        self._write_meta(scenario=sc.name, variant=self.variant.name if self.variant else None, label=self.label,
                         policy=sc.policy.kind.value, started=time.time(), finished=False,
                         guests={g.name: {"memory_mib": g.memory_mib, "cpus": g.cpus, "swap": str(g.swap),
                                          "intermediate": g.intermediate.enabled} for g in sc.guests},
                         host={"memory_budget_mib": sc.host.memory_budget_mib, "host_swap": str(sc.host.host_swap)})
        self._events = JsonlAppender(self.folder / HARNESS_EVENTS)
        ledger = JsonlAppender(self.folder / HOST_LEDGER)
        error: BaseException | None = None
        try:
            with contextlib.ExitStack() as stack:
                budget = None
                if sc.host.memory_budget_mib:
                    libvirt = any((g.backend or self.factory.defaults.backend) is Backend.LIBVIRT
                                  for g in sc.guests)
                    budget = stack.enter_context(HostBudget(self.factory.run, sc.host.memory_budget_mib,
                                                            sc.host.host_swap, libvirt=libvirt))
                    self._record({"event": "budget", "cgroup": str(budget.path), "budget_mib": budget.budget_mib,
                                  "host_swap": str(sc.host.host_swap),
                                  "cgroup_version": budget.controller.version.value})
                    self._say(f"host budget {budget.budget_mib} MiB in {budget.path} (host swap {sc.host.host_swap})")
                    stack.callback(self._budget_final, budget)
                # QEMU dies with the *thread* that forked it (PR_SET_PDEATHSIG), so the threads
                # that start the guests live until the guests are released.
                starters = stack.enter_context(ThreadPoolExecutor(max_workers=len(sc.guests),
                                                                  thread_name_prefix="guest-start"))
                machines = self._start_guests(budget, starters)
                stack.callback(self._release, machines)
                self._run_on(machines, budget, ledger)
        except BaseException as exc:
            error = exc
            self._write_meta(error=f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            self._write_meta(finished=error is None or isinstance(error, HarnessError), ended=time.time())
            self._events.close()
            ledger.close()
        if error is not None and (not isinstance(error, HarnessError) or not self._guests_started):
            # Nothing ran (no budget, no guest) or a bug or Ctrl-C: the error itself is the
            # report; the folder keeps what there was.
            raise error
        report = build_report(self.folder, sc, self.variant.name if self.variant else None, self.label)
        return RunResult(sc, self.tag, self.folder, report.summary, report.expectations)

    def _write_facts(self) -> None:
        """The environment's facts, for a bundle of this run (harness.envfacts)."""
        backends = sorted({(g.backend or self.factory.defaults.backend).value for g in self.scenario.guests})
        try:
            facts = gather(self.factory.image, self.factory.accel.value, ",".join(backends))
            (self.folder / FACTS_FILE).write_text(facts.to_json())
        except Exception:  # evidence, not a reason to fail the run
            log.exception("gathering the environment's facts failed")

    def _start_guests(self, budget: HostBudget | None, pool: ThreadPoolExecutor) -> dict[str, Machine]:
        sc = self.scenario
        placement = Placement(cgroup_procs=budget.cgroup.procs_file if budget else None,
                              libvirt_partition=budget.libvirt_partition if budget else None,
                              evidence_dir=self.folder,
                              tcg_tb_mib=TCG_TB_SIZE_BUDGET_MIB if budget else None)
        # Under a budget every guest's RAM must be its own, charged to the budget: pages of a
        # shared RAM image are charged to whichever cgroup first read them (and counted as
        # reclaimable page cache), which would make the budget depend on other guests.
        ram_mode = RamMode.STREAMED if budget else None
        started: dict[str, Machine] = {}
        self._say("starting " + ", ".join(f"{g.name} ({g.memory_mib} MiB, {g.cpus} vCPU, swap {g.swap})"
                                          for g in sc.guests))
        futures = {g.name: pool.submit(self.factory.start, self._spec(g), placement=placement, ram_mode=ram_mode)
                   for g in sc.guests}
        errors = []
        for name, future in futures.items():
            try:
                started[name] = future.result()
            except BaseException as exc:  # the others are released below
                errors.append(exc)
        if errors:
            self._release(started)
            raise errors[0]
        self._guests_started = True
        for name, machine in started.items():
            self._record({"event": "vm-ready", "vm": name, "pid": machine.host_pid(),
                          "restored": bool(getattr(machine, "restored", False)),
                          "seconds": round((machine.ready_at or 0) - (machine.started_at or 0), 2)})
        return started

    def _spec(self, g: GuestSection):
        return self.factory.defaults.with_(
            name=g.name, memory_mib=g.memory_mib, cpus=g.cpus, swap=g.swap, balloon=g.balloon_device,
            balloon_stats_interval_s=g.stats_period_s, **({"backend": g.backend} if g.backend else {}))

    def _run_on(self, machines: dict[str, Machine], budget: HostBudget | None, ledger: JsonlAppender) -> None:
        sc = self.scenario
        handles = {g.name: GuestHandle(g.name, machines[g.name], BalloonController(machines[g.name].balloon),
                                       g.balloon_min_mib) for g in sc.guests}
        drivers = [GuestDriver(g, handles[g.name], self.folder, self._record, self.progress, self.tag)
                   for g in sc.guests]
        _parallel([d.prepare for d in drivers])
        monitor = HostMonitor(list(handles.values()), budget, ledger, self._record)
        t0 = time.time()
        self._write_meta(t0=t0)
        monitor.sample_once()
        monitor.start()
        policy = PolicyLoop(policy_for(sc), monitor, handles, t0, self._record)
        policy.start()
        self._record({"event": "policy", "kind": sc.policy.kind.value, "interval_s": policy.policy.interval_s})
        stop = threading.Event()
        deadline = t0 + sc.time_limit_s
        try:
            _parallel([lambda d=d: d.drive(t0, deadline, stop.is_set) for d in drivers])
            if time.time() >= deadline:
                self._record({"event": "time-limit", "limit_s": sc.time_limit_s})
                self._say(f"time limit {sc.time_limit_s:.0f} s reached")
        finally:
            stop.set()
            policy.stop()
            self._record({"event": "collect-start"})  # figures "at the end" are taken before this
            self._say("workloads finished; giving the guests their memory back and collecting evidence")
            _parallel([d.collect for d in drivers])
            monitor.stop()
        for thread in (monitor, policy):
            if thread.error is not None:
                raise HarnessError(f"The scenario's {thread.name} thread failed: {thread.error!r}",
                                   fix="this is a harness bug; the run folder keeps the evidence so far.")

    def _release(self, machines: dict[str, Machine]) -> None:
        def release(name: str, machine: Machine) -> None:
            try:
                machine.collect_artifacts(self.folder / name)
            except Exception:
                log.exception("collecting the artifacts of %s failed", name)
            self.factory.release(machine)
        _parallel([lambda n=n, m=m: release(n, m) for n, m in machines.items()])

    def _budget_final(self, budget: HostBudget) -> None:
        try:
            reading = budget.read()
        except OSError as exc:
            self._record({"event": "budget-final", "error": str(exc)})
            return
        self._record({"event": "budget-final", "peak_mib": reading.peak_mib, "oom_kills": reading.oom_kills,
                      "limit_hits": reading.limit_hits, "usage_mib": round(reading.usage_mib, 1),
                      "pids_left": list(reading.pids)})


def _parallel(calls: list[Callable[[], None]]) -> None:
    """Run the calls on threads of their own; re-raise the first failure once all ended."""
    if len(calls) == 1:
        calls[0]()
        return
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
    for future in futures:
        future.result()


def run_scenario(scenario: Scenario, factory: MachineFactory, folder: Path, *, intermediate: bool | None = None,
                 variant: str | Variant | None = None, progress: Progress = lambda _m: None) -> RunResult:
    """One run. `variant` (e.g. "mom+intermediate") or `intermediate` (True: "on", False:
    "off"); neither: the scenario as written."""
    if variant is None and intermediate is not None:
        variant = "on" if intermediate else "off"
    chosen = parse_variant(variant) if isinstance(variant, str) else variant
    return ScenarioRunner(scenario, factory, folder, variant=chosen, progress=progress).run()


def compare_variants(scenario: Scenario, factory: MachineFactory, folder: Path, variants: list[Variant],
                     progress: Progress = lambda _m: None, repeat: int = 1) -> list[RunResult]:
    """The scenario once per variant, each on fresh guests, in `folder/<variant>/`; with
    `repeat` N, N times each (`folder/<variant>-<i>/`), the variants taking turns so that a
    slow spell of the host does not fall on one variant only."""
    results = []
    for i in range(1, repeat + 1):
        for v in variants:
            where = folder / (v.name if repeat == 1 else f"{v.name}-{i}")
            results.append(run_scenario(scenario, factory, where, variant=v, progress=progress))
    write_comparison(folder, scenario.name, [r.summary for r in results])
    return results


def write_comparison(folder: Path, name: str, summaries: list[dict]) -> dict:
    """summary.json of a comparison. One run per variant: "runs" maps each variant to its
    summary. Repeated: "runs" maps each to the list of its runs' summaries, "medians" to
    each figure's median, min, max and per-run values, and the verdicts judge the medians."""
    groups = group_runs(summaries)
    judge_on = judged(groups)
    base, *others = judge_on.values()
    comparison = {"scenario": name, "variants": list(groups),
                  "verdicts": {v: verdict(base, judge_on[v]) for v in list(groups)[1:]}}
    if any(len(runs) > 1 for runs in groups.values()):
        comparison["repeat"] = max(len(runs) for runs in groups.values())
        comparison["runs"] = groups
        comparison["medians"] = {v: {k: s.as_dict() if s else None for k, s in aggregate(runs).items()}
                                 for v, runs in groups.items()}
    else:
        comparison["runs"] = {v: runs[0] for v, runs in groups.items()}
        for v in ("off", "on"):  # today's keys, for readers of the two-column summary
            if v in groups:
                comparison[v] = groups[v][0]
    if len(others) == 1:
        comparison["verdict"] = verdict(base, others[0])
    (folder / SUMMARY).write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    return comparison


def compare_scenario(scenario: Scenario, factory: MachineFactory, folder: Path,
                     progress: Progress = lambda _m: None) -> tuple[RunResult, RunResult]:
    """The same scenario twice, on fresh guests: plain ballooning, then with the daemon."""
    off, on = compare_variants(scenario, factory, folder, [parse_variant("off"), parse_variant("on")], progress)
    return off, on


def new_run_folder(root: Path, scenario: Scenario) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"{stamp}-{scenario.name}"
    n = 2
    while folder.exists():
        folder = root / f"{stamp}-{scenario.name}-{n}"
        n += 1
    folder.mkdir(parents=True)
    return folder

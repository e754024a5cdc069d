"""A run folder to its figures: the ledger, the summary, the expectations, the plot. The
runner calls this at the end of every run and `balloon-harness report RUN_DIR` calls it on
whatever a folder holds, complete or not (a killed run gives a partial table and plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.ledger import HOST_ROW, GuestTrack, Ledger, progress_unit
from harness.plot import plot_run
from harness.scenario.evidence import RUN_META, load_evidence, read_json
from harness.scenario.model import ScenarioError, parse_scenario
from harness.scenario.report import ExpectationResult, check_expectations, summarize
from harness.scenario.spec import Scenario
from harness.scenario.variants import parse_variant

SUMMARY = "summary.json"
PLOT = "plot.png"


@dataclass
class RunReport:
    scenario: Scenario
    folder: Path
    summary: dict
    expectations: list[ExpectationResult]
    ledger: Ledger


def is_run_folder(folder: Path) -> bool:
    return (folder / RUN_META).is_file()


def scenario_of(folder: Path) -> tuple[Scenario, str | None, str]:
    """The scenario as this run ran it (its variant applied), the variant and its label."""
    meta = read_json(folder / RUN_META) or {}
    try:
        text = (folder / "scenario.toml").read_text()
    except OSError:
        raise ScenarioError(f"{folder} has no scenario.toml: it is not a run folder.",
                            fix="give the folder `run` or `compare` printed (it holds run.json).") from None
    scenario = parse_scenario(text, f"{folder}/scenario.toml")
    name = meta.get("variant")
    if not name:
        return scenario, None, meta.get("label") or "as written"
    variant = parse_variant(name)
    return variant.apply(scenario), name, variant.label


def build_report(folder: Path, scenario: Scenario | None = None, variant: str | None = None,
                 label: str | None = None) -> RunReport:
    if scenario is None:
        scenario, variant, label = scenario_of(folder)
    run = load_evidence(folder)
    tracks = []
    for guest in scenario.guests:
        evidence = run.guests.get(guest.name)
        tracks.append(GuestTrack(guest.name, [r for r in run.host_rows if r.get("vm") == guest.name],
                                 evidence.samples if evidence else [], run.offset(guest.name),
                                 [w.name for w in guest.workloads]))
    ledger = Ledger.merge(run.t0, [r for r in run.host_rows if r.get("vm") == HOST_ROW], tracks)
    ledger.write(folder)
    summary = summarize(scenario, run, ledger, variant or "scenario", label or "as written")
    summary["folder"] = str(folder)
    summary["plot"] = str(folder / PLOT)
    expectations = check_expectations(scenario, summary)
    summary["expectations"] = [vars(e) for e in expectations]
    failed = run.meta.get("error")
    if failed:
        summary["error"] = failed
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")

    daemon_events = {}
    units = {}
    for guest in scenario.guests:
        evidence = run.guests.get(guest.name)
        if evidence is None:
            continue
        offset = run.offset(guest.name)
        daemon_events[guest.name] = [{**e, "t_host": e["t"] - offset} for e in evidence.daemon_events if "t" in e]
        for spec in guest.workloads:
            records = evidence.progress.get(spec.name) or [
                s["progress"][spec.name] for s in evidence.samples if (s.get("progress") or {}).get(spec.name)]
            units[spec.name] = progress_unit(records) or ""
    deaths = [e for e in run.harness_events if e.get("event") == "vm-died"]
    partial = "" if run.complete else " (PARTIAL: the run did not finish)"
    plot_run(ledger, daemon_events, f"{scenario.name}: {summary['label']}{partial}", folder / PLOT,
             units=units, deaths=deaths)
    return RunReport(scenario, folder, summary, expectations, ledger)

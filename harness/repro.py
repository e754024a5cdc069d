"""`balloon-harness repro BUNDLE`: unpack a bundle (harness.bundle, safely), run its scenario
again with the same variant, image recipe and backend, and set the original figures beside
the new ones, with the environment facts that differ and whether the outcome reproduced."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from harness.bundle import open_bundle
from harness.envfacts import FACTS_FILE, EnvFacts, FactDiff, diff_facts
from harness.errors import ConfigError
from harness.scenario.rebuild import SUMMARY, build_report, written_scenario
from harness.scenario.table import summary_table

REPRO_OF = "repro-of.json"


@dataclass
class ReproPair:
    variant: str | None
    original: dict
    new: dict


@dataclass
class ReproResult:
    folder: Path
    pairs: list[ReproPair]
    original_facts: EnvFacts | None
    new_facts: EnvFacts | None

    @property
    def passed(self) -> bool:
        return all(not failed_expectations(p.new) and "error" not in p.new for p in self.pairs)


# -- the pure part: what to print -------------------------------------------------------------------
def failed_expectations(summary: dict) -> list[str]:
    return [e["name"] for e in summary.get("expectations") or [] if not e.get("passed")]


def expectations_cell(summary: dict) -> str:
    checked = summary.get("expectations") or []
    if not checked:
        return "none in the scenario"
    failed = failed_expectations(summary)
    return f"FAILED: {', '.join(failed)}" if failed else f"all {len(checked)} passed"


def side_by_side(original: dict, new: dict) -> Table:
    """The summary table with two columns, the bundle's run and this one, plus the expectations."""
    what = original.get("label") or original.get("variant") or "as written"
    table = summary_table([{**original, "label": "original run"}, {**new, "label": "now"}],
                          title=f"{original.get('scenario', '?')} ({what}): the bundle's run vs now")
    table.add_row("expectations", expectations_cell(original), expectations_cell(new))
    return table


def outcome(original: dict, new: dict) -> str:
    """Did the new run end as the original did, judged by the expectations?"""
    before, now = failed_expectations(original), failed_expectations(new)
    if not original.get("expectations") and not new.get("expectations"):
        return "The scenario has no expectations: compare the figures above."
    if before and set(before) <= set(now):
        return f"Reproduced: the original run failed {', '.join(before)}; this run failed {', '.join(now)}."
    if before and not now:
        return f"NOT reproduced: the original run failed {', '.join(before)}; this run passed every expectation."
    if before:
        return f"Partly reproduced: the original run failed {', '.join(before)}; this run failed {', '.join(now)}."
    if now:
        return f"Different: the original run passed every expectation; this run failed {', '.join(now)}."
    return "Same outcome: both runs passed every expectation."


def facts_report(original: EnvFacts | None, now: EnvFacts | None) -> Table | str:
    if original is None:
        return "The bundle has no environment facts: nothing to compare."
    if now is None:
        return "This run wrote no environment facts: nothing to compare."
    diffs = diff_facts(original, now)
    when = "" if original.gathered == "run" else " (the original's were gathered when the bundle was made)"
    if not diffs:
        return f"Environment: every fact is the same{when}."
    return facts_table(diffs, f"Environment facts that differ{when}")


def facts_table(diffs: list[FactDiff], title: str) -> Table:
    table = Table(title=title)
    for column in ("fact", "original run", "now"):
        table.add_column(column, overflow="fold")
    for d in diffs:
        table.add_row(d.label, _shown(d.original), _shown(d.now))
    return table


def _shown(value: object) -> str:
    return "unknown" if value is None else str(value)


# -- the run ----------------------------------------------------------------------------------------
def original_summary(run: Path) -> dict:
    """What the original run reported; rebuilt from its evidence when it wrote no summary."""
    try:
        summary = json.loads((run / SUMMARY).read_text())
        if isinstance(summary, dict) and "guests" in summary:
            return summary
    except (OSError, ValueError):
        pass
    return build_report(run).summary


def reproduce(bundle_path: Path, runs_root: Path, accel: str = "auto",
              progress: Callable[[str], None] = lambda _m: None) -> ReproResult:
    """Unpack, re-run every run the bundle holds (a compare bundle: each variant), on fresh
    guests with the bundle's image recipe and backend, into a new folder under runs_root."""
    from harness.scenario.runner import new_run_folder, run_scenario
    from harness.session import HarnessOptions, HarnessSession

    with tempfile.TemporaryDirectory(prefix="bh-bundle-") as tmp:
        bundle = open_bundle(bundle_path, Path(tmp) / "bundle")
        if not bundle.runs:
            raise ConfigError(f"{bundle_path} holds a test's artifacts, not a scenario run: there is nothing to re-run.",
                              fix="re-run the test it came from (the bundle's folder is named after the test id); "
                                  "bundle a run folder to use repro.")
        originals = [(written_scenario(run), original_summary(run)) for run in bundle.runs]
        facts = bundle.facts
        backends = (facts.backend or "qemu").split(",") if facts else ["qemu"]
        options = HarnessOptions(accel=accel, image=facts.image if facts else None,
                                 backend=backends[0] if len(backends) == 1 else "qemu")
        session = HarnessSession.open(options, progress=progress)
        factory = session.factory()
        first = originals[0][0][0]
        folder = new_run_folder(runs_root, first)
        (folder / REPRO_OF).write_text(json.dumps({"bundle": str(bundle_path.resolve()),
                                                   "source": bundle.manifest.get("source"),
                                                   "started": time.time()}, indent=2) + "\n")
        pairs = []
        try:
            for (scenario, variant, _meta), summary in originals:
                where = folder / (variant or "scenario") if len(originals) > 1 else folder
                result = run_scenario(scenario, factory, where, variant=variant, progress=progress)
                pairs.append(ReproPair(variant, summary, result.summary))
        finally:
            factory.close()
    new_facts = EnvFacts.load(Path(pairs[0].new["folder"]) / FACTS_FILE)
    return ReproResult(folder, pairs, facts, new_facts)

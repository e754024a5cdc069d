"""`compare --repeat N` without a VM: medians and ranges, the median summary a verdict judges,
the repeated table, the comparison's exit status, and `report` on a repeated compare folder."""

import json

import pytest
from rich.console import Console
from test_expectations import summary, with_
from test_run_report import cli, write_run

from harness.scenario.comparison import Exit, comparison_view, exit_status
from harness.scenario.evidence import RUN_META
from harness.scenario.repeat import FIGURES, Spread, aggregate, group_runs, judged, median_summary, spread
from harness.scenario.runner import write_comparison
from harness.scenario.table import Outcome


def test_spread_is_the_median_and_range_of_the_runs_that_have_the_figure():
    assert spread([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert spread([4, 1, None, 2, 10]) == Spread(3.0, 1.0, 10.0, (4, 1, None, 2, 10))  # even count: mean of the two
    assert spread([None, None]) is None and spread([]) is None
    assert spread([True, 2.0]).median == 2.0  # a flag is not a number
    assert Spread(2.0, 1.0, 3.0, ()).text() == "2.0 (1.0–3.0)"
    assert Spread(2.0, 2.0, 2.0, ()).text(2) == "2.00"
    assert Spread(2.0, 1.0, 3.5, ()).text(0) == "2 (1–4)"
    assert Spread(2.0, 1.0, 3.0, (1.0, None)).as_dict() == {"median": 2.0, "min": 1.0, "max": 3.0,
                                                            "values": [1.0, None]}


def runs(*stalls, **same):
    out = []
    for i, stall in enumerate(stalls):
        s = summary(psi_full_stall_s=stall, protected_items_per_s=100.0 + 10 * i, **same)
        s["host"]["host_oom_kills"] = i
        out.append(s)
    return out


def test_aggregate_covers_every_figure_with_nested_host_figures():
    agg = aggregate(runs(5.0, 1.0, 3.0))
    assert set(agg) == {".".join(f.key) for f in FIGURES}
    assert agg["psi_full_stall_s"] == Spread(3.0, 1.0, 5.0, (5.0, 1.0, 3.0))
    assert agg["protected_items_per_s"].median == 110.0
    assert agg["host.host_oom_kills"] == Spread(1.0, 0.0, 2.0, (0, 1, 2))
    assert agg["host.host_swap_peak_mib"] is None


def test_median_summary_is_shaped_like_one_run():
    three = runs(5.0, 1.0, 3.0)
    three[1]["balloon_reached"] = False
    three[2]["left_stopped"] = ["hog(3)"]
    m = median_summary(three)
    assert m["psi_full_stall_s"] == 3.0 and m["host"]["host_oom_kills"] == 1.0 and m["repeat"] == 3
    assert m["host"]["host_swap_peak_mib"] is None and m["host"]["budget_mib"] == 1600
    assert m["balloon_reached"] is False and m["protected_completed"] is True
    assert m["left_stopped"] == ["hog(3)"]
    assert three[0]["psi_full_stall_s"] == 5.0 and three[0]["host"]["host_oom_kills"] == 0  # inputs untouched
    # What is not a figure comes from the first run.
    assert median_summary([dict(x, folder=f"run-{i}") for i, x in enumerate(three)])["folder"] == "run-0"
    # A summary without the host's figures (an older run) gets them, unknown.
    bare = [{k: v for k, v in x.items() if k != "host"} for x in three]
    assert median_summary(bare)["host"] == {"peak_usage_mib": None, "host_swap_peak_mib": None,
                                            "host_oom_kills": None, "time_over_budget_s": None}


def test_groups_keep_the_order_of_first_runs():
    a1, b1, a2, b2 = (dict(summary(), variant=v, n=i) for i, v in enumerate("abab"))
    groups = group_runs([a1, b1, a2, b2])
    assert list(groups) == ["a", "b"] and [s["n"] for s in groups["a"]] == [0, 2]
    single = {"a": [a1]}
    assert judged(single)["a"] is a1
    assert judged(groups)["a"]["repeat"] == 2


def labelled(items, variant, label):
    return [dict(s, variant=variant, label=label) for s in items]


def test_a_repeated_comparison_shows_medians_and_ranges_and_judges_the_medians():
    off = labelled(runs(10.0, 12.0, 30.0), "off", "balloon only")
    on = labelled(runs(2.0, 3.0, 11.0), "on", "balloon + Intermediate")
    view = comparison_view([off[0], on[0], off[1], on[1], off[2], on[2]])
    console = Console(width=200, record=True)
    console.print(view.table)
    out = console.export_text()
    assert "median (min–max) over 3 runs per variant" in out.replace("\n", " ")
    assert "balloon only (3 runs)" in out and "balloon + Intermediate (3 runs)" in out
    line = next(x for x in out.splitlines() if "PSI full stall" in x)
    assert "12.00 (10.00–30.00)" in line and "3.00 (2.00–11.00)" in line
    assert next(x for x in out.splitlines() if "balloon target reached" in x).count("3 of 3") == 2
    header = next(x for x in out.splitlines() if "balloon only (3 runs)" in x)
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["", "balloon only (3 runs)", "balloon + Intermediate (3 runs)"]
    swap = [c.strip() for c in next(x for x in out.splitlines() if "host swap peak" in x).split("│")[1:-1]]
    assert swap == ["host · host swap peak (MiB)", "-", "-"]  # no run had it
    assert "host · host OOM kills" in out
    [v] = view.verdicts
    # The medians differ by 9 s of stall; the worst "on" run (11 s) is worse than the best "off" one.
    assert v.better == ("PSI full stall",) and v.outcome is Outcome.BETTER
    assert view.failed_verdicts() == [] and view.failed_verdicts(require_better=True) == []


def test_runs_that_left_processes_stopped_are_counted():
    off = labelled(runs(1.0, 2.0), "off", "off")
    on = labelled(runs(1.0, 2.0), "on", "on")
    on[1]["left_stopped"] = ["hog(3)"]
    console = Console(width=200, record=True)
    console.print(comparison_view(off + on).table)
    row = next(x for x in console.export_text().splitlines() if "left stopped" in x)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["left stopped at the end (runs)", "0 of 2", "1 of 2"]


def test_long_cells_fold_instead_of_being_cut():
    long = labelled(runs(1.0, 2.0), "off", "a-variant-with-a-very-long-unbreakable-label@")
    console = Console(width=60, record=True)
    console.print(comparison_view(long + labelled(runs(1.0, 2.0), "on", "on")).table)
    out = console.export_text()
    assert "…" not in out and "@" in out  # nothing cut off: the label's end is there


def test_no_host_rows_without_a_budget():
    plain = runs(1.0, 2.0, host_budget_mib=None)
    console = Console(width=200, record=True)
    console.print(comparison_view(labelled(plain, "off", "off") + labelled(plain, "on", "on")).table)
    assert "host ·" not in console.export_text()


def test_the_verdict_fails_a_comparison_when_a_variant_did_worse_and_demo_also_when_it_changed_nothing():
    base = summary()
    worse = dict(with_(base, oom_kills=2), variant="on")
    same = dict(with_(base), variant="on")
    mixed = dict(with_(base, oom_kills=2, psi_full_stall_s=0.0), variant="on")
    for other, plain, demo in ((worse, 1, 1), (same, 0, 1), (mixed, 0, 0)):
        view = comparison_view([base, other])
        assert len(view.failed_verdicts()) == plain and len(view.failed_verdicts(require_better=True)) == demo
    assert exit_status(True, []) is Exit.OK and exit_status(False, []) is Exit.FAILED
    failed = comparison_view([base, worse]).failed_verdicts()
    assert exit_status(True, failed) is Exit.VERDICT == 3 and exit_status(False, failed) is Exit.FAILED


def test_write_comparison_carries_each_run_and_the_medians(tmp_path):
    off = labelled(runs(10.0, 30.0), "off", "balloon only")
    on = labelled(runs(2.0, 4.0), "on", "balloon + Intermediate")
    data = write_comparison(tmp_path, "x", [off[0], on[0], off[1], on[1]])
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(data, default=str))
    assert data["repeat"] == 2 and data["variants"] == ["off", "on"]
    assert [s["psi_full_stall_s"] for s in data["runs"]["off"]] == [10.0, 30.0]
    assert data["medians"]["off"]["psi_full_stall_s"] == {"median": 20.0, "min": 10.0, "max": 30.0,
                                                          "values": [10.0, 30.0]}
    assert data["verdicts"]["on"].startswith("Verdict: the Intermediate module did better on PSI full stall")
    assert "verdict" in data and "off" not in data
    one = write_comparison(tmp_path, "x", [off[0], on[0]])
    assert one["runs"]["off"]["psi_full_stall_s"] == 10.0 and one["off"] is one["runs"]["off"]
    assert "repeat" not in one and "medians" not in one


@pytest.fixture
def repeated_folder(tmp_path):
    folder = tmp_path / "cmp"
    folder.mkdir()
    for i in (1, 2):
        for variant, dies in (("schedule", 99.0), ("mom", 12.0 + i)):
            run = write_run(folder / f"{variant}-{i}", b_dies_at=dies)
            meta = json.loads((run / RUN_META).read_text())
            (run / RUN_META).write_text(json.dumps({**meta, "variant": variant}))
    (folder / "summary.json").write_text(json.dumps({"variants": ["schedule", "mom"]}))
    return folder


def test_report_on_a_repeated_compare_folder(repeated_folder):
    proc = cli("report", str(repeated_folder))
    out = proc.stdout + proc.stderr
    # mom's guest b is killed by the host in both runs (its expectation fails: exit 1), and
    # the medians say MOM did worse on host OOM kills.
    assert proc.returncode == 1, out
    assert "over 2 runs per variant" in out and "schedule (2 runs)" in out and "MOM (2 runs)" in out, out
    assert "Verdict: MOM did WORSE on host OOM kills than schedule." in out, out
    data = json.loads((repeated_folder / "summary.json").read_text())
    assert data["repeat"] == 2 and len(data["runs"]["mom"]) == 2
    assert data["medians"]["mom"]["host.host_oom_kills"]["median"] == 1.0


def test_report_exits_3_when_only_the_verdict_failed(repeated_folder):
    import tomllib
    for run in repeated_folder.iterdir():
        if run.is_dir():  # drop the expectation the killed guest fails
            text = (run / "scenario.toml").read_text().replace("no_host_oom_kill = true\n", "")
            tomllib.loads(text)
            (run / "scenario.toml").write_text(text)
    proc = cli("report", str(repeated_folder))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "the comparison failed: MOM did not do better than schedule" in out, out

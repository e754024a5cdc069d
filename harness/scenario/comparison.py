"""What `compare`, `demo` and `report` print for several runs, and the exit status they return.

Exit status: 0 all good; 1 an expectation failed or a run broke; 2 bad input (the error
names the fix); 3 the runs met their expectations but the comparison's verdict failed: a
variant did worse than the first column on some figure and better on none (with
`require_better`, as `demo` asks: also when it made no measurable difference)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rich.table import Table

from harness.scenario.repeat import group_runs, judged, repeat_table
from harness.scenario.table import Outcome, Verdict, judge, summary_table


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    VERDICT = 3


@dataclass
class ComparisonView:
    table: Table
    verdicts: list[Verdict]

    def failed_verdicts(self, require_better: bool = False) -> list[Verdict]:
        bad = {Outcome.WORSE, Outcome.SAME} if require_better else {Outcome.WORSE}
        return [v for v in self.verdicts if v.outcome in bad]


def comparison_view(summaries: list[dict]) -> ComparisonView:
    """One column per variant: its run, or with repeats its runs' medians and ranges; each
    later variant judged against the first (on the medians when repeated)."""
    groups = group_runs(summaries)
    if any(len(runs) > 1 for runs in groups.values()):
        first = summaries[0]
        n = max(len(runs) for runs in groups.values())
        table = repeat_table([(runs[0]["label"], runs) for runs in groups.values()],
                             f"{first['scenario']}: median (min–max) over {n} runs per variant")
    else:
        table = summary_table([runs[0] for runs in groups.values()])
    base, *others = judged(groups).values()
    return ComparisonView(table, [judge(base, other) for other in others])


def exit_status(runs_passed: bool, failed_verdicts: list[Verdict]) -> Exit:
    if not runs_passed:
        return Exit.FAILED
    return Exit.VERDICT if failed_verdicts else Exit.OK

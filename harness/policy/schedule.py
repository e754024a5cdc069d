"""The fixed schedule of [[balloon]] steps as a policy: at `at_s` the target starts moving
from where it was to `target_mib`, over `ramp_s` in equal steps one decision interval apart,
so that every step of a ramp is a target the ledger records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from harness.policy.base import BalloonAction, Policy, PolicyInput


@dataclass(frozen=True)
class Step:
    at_s: float
    target_mib: float
    ramp_s: float = 0.0


def scheduled_target(start_mib: float, steps: tuple[Step, ...], t_s: float,
                     interval_s: float = 1.0) -> tuple[float, int | None]:
    """The target at `t_s` and the index of the step that set it (None: the start size). A
    ramp is cut into ramp_s / interval_s equal steps (at least one), the k-th taken at
    at_s + k × ramp_s / n, so the targets are the same whenever the decisions fall."""
    value, index = start_mib, None
    for i, step in enumerate(steps):
        if t_s < step.at_s:
            break
        n = max(1, round(step.ramp_s / interval_s))
        done = n if step.ramp_s <= 0 else min(n, int((t_s - step.at_s) * n / step.ramp_s + 1e-9))
        value, index = value + (step.target_mib - value) * done / n, i
    return value, index


class SchedulePolicy(Policy):
    def __init__(self, steps: Mapping[str, tuple[Step, ...]], start_mib: Mapping[str, float],
                 interval_s: float = 1.0, resolution_mib: float = 1.0) -> None:
        self.steps = dict(steps)
        self.start_mib = dict(start_mib)
        self.interval_s = interval_s
        self.resolution_mib = resolution_mib

    def decide(self, state: PolicyInput) -> list[BalloonAction]:
        actions = []
        for guest in state.guests:
            steps = self.steps.get(guest.name, ())
            if not guest.alive or not steps:
                continue
            target, index = scheduled_target(self.start_mib.get(guest.name, guest.max_mib), steps, state.t_s,
                                             self.interval_s)
            current = guest.target_mib if guest.target_mib is not None else guest.max_mib
            if index is not None and abs(target - current) >= self.resolution_mib:
                step = steps[index]
                actions.append(BalloonAction(guest.name, round(target, 1),
                                             f"step {index + 1} at {step.at_s:g} s: toward "
                                             f"{step.target_mib:g} MiB over {step.ramp_s:g} s"))
        return actions

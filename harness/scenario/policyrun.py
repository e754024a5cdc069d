"""Running a balloon policy during a scenario: every `interval_s` the monitor's history goes
in, the targets that come out are set (each one logged with its reason)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from harness.policy.base import Policy
from harness.policy.mom import MomPolicy
from harness.policy.schedule import SchedulePolicy, Step
from harness.scenario.monitor import GuestHandle, HostMonitor
from harness.scenario.spec import PolicyKind, Scenario

log = logging.getLogger(__name__)


def policy_for(scenario: Scenario) -> Policy:
    p = scenario.policy
    if p.kind is PolicyKind.MOM:
        return MomPolicy(p.mom, interval_s=p.interval_s)
    steps = {g.name: tuple(Step(s.at_s, s.target_mib, s.ramp_s) for s in g.balloon) for g in scenario.guests}
    return SchedulePolicy(steps, {g.name: g.start_mib for g in scenario.guests}, interval_s=p.interval_s)


class PolicyLoop(threading.Thread):
    def __init__(self, policy: Policy, monitor: HostMonitor, guests: dict[str, GuestHandle], t0: float,
                 record: Callable[[dict], None]) -> None:
        super().__init__(name="balloon-policy", daemon=True)
        self.policy, self.monitor, self.guests, self.t0, self.record = policy, monitor, guests, t0, record
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._halt.is_set():
                self.step()
                next_at += self.policy.interval_s
                self._halt.wait(max(0.0, next_at - time.monotonic()))  # the policy's period
        except BaseException as exc:
            log.exception("balloon policy failed")
            self.error = exc

    def step(self) -> None:
        state = self.monitor.policy_input(self.t0)
        for action in self.policy.decide(state):
            guest = self.guests.get(action.vm)
            if guest is None or not guest.alive:
                continue
            try:
                guest.set_target(action.target_mib)
            except Exception as exc:  # QMP, libvirt or range errors alike
                # A target out of range or a QEMU that just died: logged, never fatal.
                self.record({"event": "balloon-target-failed", "vm": action.vm, "target_mib": action.target_mib,
                             "error": str(exc)[:300]})
                continue
            self.record({"event": "balloon-target", "vm": action.vm, "target_mib": action.target_mib,
                         "t_s": round(state.t_s, 2), "reason": action.reason})

"""oVirt MOM's balloon rules (oVirt/mom doc/balloon.rules; vdsm ships the same rules as
static/etc/vdsm/mom.d/02-balloon.policy), as a pure function.

Every decision:

* host free share = average free memory / total, free counting page cache (MOM's
  Host.StatAvg("mem_free") / Host.mem_available). Here the host is the budget cgroup:
  free = budget - usage + page cache charged to it;
* under `pressure_threshold` (0.20) every guest is shrunk: its wanted free share is
  0.20 × host share / 0.20 (at or under `pressure_critical`, 0.05: host share - 0.05, which
  is negative and pushes the guest into its own swap); used = average actual - average
  MemFree; new target = max(actual × 0.95, balloon_min, used + wanted share × actual),
  set only if it is not above actual;
* otherwise every ballooned guest grows: max(actual × 1.05, balloon_min, used + 0.20 ×
  actual), at most its size. Note that MOM's grow is *not* limited to 5 %: a guest whose
  used memory plus 20 % is further away gets it in one decision;
* a change under `min_change` (0.25 %) of actual is skipped; a guest without statistics is
  left alone (vdsm's `valid` check), and one below its balloon_min is raised to it (vdsm's
  QoS rule).

Averages ("StatAvg") are over the last `history` samples (MOM: 10).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.policy.base import BalloonAction, GuestView, Policy, PolicyInput, mean


@dataclass(frozen=True)
class MomRules:
    pressure_threshold: float = 0.20
    pressure_critical: float = 0.05
    min_guest_free: float = 0.20
    max_change: float = 0.05
    min_change: float = 0.0025
    history: int = 10


class MomPolicy(Policy):
    def __init__(self, rules: MomRules | None = None, interval_s: float = 2.0) -> None:
        self.rules = rules or MomRules()
        self.interval_s = interval_s

    def host_free_share(self, state: PolicyInput) -> float | None:
        recent = state.host[-self.rules.history:]
        if not recent:
            return None
        return mean([h.free_mib for h in recent]) / recent[-1].total_mib

    def decide(self, state: PolicyInput) -> list[BalloonAction]:
        share = self.host_free_share(state)
        if share is None:
            return []
        actions = []
        for guest in state.guests:
            action = self.decide_guest(guest, share)
            if action is not None:
                actions.append(action)
        return actions

    def decide_guest(self, guest: GuestView, host_share: float) -> BalloonAction | None:
        r = self.rules
        recent = [s for s in guest.samples[-r.history:] if s.free_mib is not None]
        if not guest.alive or not recent:
            return None
        cur = guest.samples[-1].actual_mib
        if cur < guest.min_mib - 0.5:
            return BalloonAction(guest.name, guest.min_mib, f"below balloon_min {guest.min_mib:g} MiB")
        used = mean([s.actual_mib for s in recent]) - mean([s.free_mib for s in recent])  # type: ignore[misc]
        if host_share < r.pressure_threshold:
            if host_share <= r.pressure_critical:
                wanted = host_share - 0.05  # negative: the guest must use its own swap
            else:
                wanted = r.min_guest_free * host_share / r.pressure_threshold
            floor = max(guest.min_mib, used + wanted * cur)
            target = max(cur * (1 - r.max_change), floor)
            if target > cur or not self._big_enough(target, cur):
                return None
            why = "5 % step" if target == cur * (1 - r.max_change) else "to used + free share"
            return BalloonAction(guest.name, round(target, 1),
                                 f"shrink ({why}): host free {host_share:.1%} < {r.pressure_threshold:.0%}, "
                                 f"used {used:.0f} MiB, wanted free {wanted:.1%}")
        if cur >= guest.max_mib:
            return None
        floor = max(guest.min_mib, used + r.min_guest_free * cur)
        target = min(guest.max_mib, max(cur * (1 + r.max_change), floor))
        if not self._big_enough(target, cur):
            return None
        return BalloonAction(guest.name, round(target, 1),
                             f"grow: host free {host_share:.1%} >= {r.pressure_threshold:.0%}, used {used:.0f} MiB")

    def _big_enough(self, target: float, cur: float) -> bool:
        return abs(target - cur) > self.rules.min_change * cur

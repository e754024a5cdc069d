"""What a scenario file describes, as plain frozen dataclasses (parsed by
harness.scenario.model): the guests, what runs in each, the host's memory budget, the
balloon policy and what the run must show."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.config import Backend, BalloonDevice, SwapSpec
from harness.host.budget import HostSwapSpec
from harness.intermediate import IntermediateOptions
from harness.policy.mom import MomRules
from harness.workloads import Role, WorkloadSpec


@dataclass(frozen=True)
class BalloonStep:
    at_s: float
    target_mib: float
    ramp_s: float = 0.0


@dataclass(frozen=True)
class IntermediateSection:
    enabled: bool = True
    stop_above: float = IntermediateOptions.stop_above
    resume_below: float = IntermediateOptions.resume_below
    hold_s: float = IntermediateOptions.hold_s
    method: str = IntermediateOptions.method
    max_stopped_s: float | None = None
    resume_headroom: float | None = None
    resume_reserve_mib: float | None = None
    page_out: bool | None = None
    min_rss_mib: float | None = None

    def options(self, protect_cgroups: tuple[str, ...]) -> IntermediateOptions:
        return IntermediateOptions(
            stop_above=self.stop_above, resume_below=self.resume_below, hold_s=self.hold_s,
            method=self.method, protect_cgroups=protect_cgroups, max_stopped_s=self.max_stopped_s,
            resume_headroom=self.resume_headroom, resume_reserve_mib=self.resume_reserve_mib,
            page_out=self.page_out, min_rss_mib=self.min_rss_mib)


#: What a policy may never take a guest below unless the scenario says otherwise (MiB):
#: a Debian guest keeps sshd and systemd alive there.
DEFAULT_BALLOON_MIN_MIB = 256


@dataclass(frozen=True)
class GuestSection:
    """One guest ([vm] or one [[vm]] table) and what runs in it."""

    name: str = "vm"
    memory_mib: int = 1024
    cpus: int = 2
    swap: SwapSpec = field(default_factory=lambda: SwapSpec.parse("file:1024"))
    backend: Backend | None = None  # None: whatever the command line says
    balloon_device: BalloonDevice = field(default_factory=BalloonDevice)
    #: Seconds between the balloon's guest statistics (QOM guest-stats-polling-interval).
    stats_period_s: int = 1
    #: Balloon target set before the workloads start (libvirt's currentMemory); None: full size.
    balloon_start_mib: float | None = None
    #: The lowest target a policy may set (MOM's balloon_min).
    balloon_min_mib: float = DEFAULT_BALLOON_MIN_MIB
    intermediate: IntermediateSection = field(default_factory=IntermediateSection)
    #: The guest's own table says `enabled = false`: no variant turns the daemon on here.
    intermediate_opt_out: bool = False
    workloads: tuple[WorkloadSpec, ...] = ()
    balloon: tuple[BalloonStep, ...] = ()

    @property
    def protected(self) -> tuple[WorkloadSpec, ...]:
        return tuple(w for w in self.workloads if w.role is Role.PROTECTED)

    @property
    def start_mib(self) -> float:
        return self.balloon_start_mib if self.balloon_start_mib is not None else float(self.memory_mib)


#: The single-[vm] name of earlier scenario files.
VmSection = GuestSection


@dataclass(frozen=True)
class HostSection:
    #: All the scenario's QEMU processes share this much host memory (None: no budget).
    memory_budget_mib: int | None = None
    host_swap: HostSwapSpec = field(default_factory=HostSwapSpec)


class PolicyKind(enum.Enum):
    #: The [[balloon]] steps, at their times (ramps in steps of interval_s).
    SCHEDULE = "schedule"
    #: oVirt MOM's balloon rules (harness.policy.mom).
    MOM = "mom"


@dataclass(frozen=True)
class PolicySection:
    kind: PolicyKind = PolicyKind.SCHEDULE
    #: Seconds between two decisions.
    interval_s: float = 1.0
    #: MOM's constants (doc/balloon.rules); `history` counts host samples (0.5 s apart).
    mom: MomRules = field(default_factory=MomRules)


@dataclass(frozen=True)
class Expectations:
    protected_completes: bool | None = None
    no_oom_kill: bool | None = None
    nothing_left_stopped: bool | None = None
    balloon_reaches_targets: bool | None = None
    max_psi_full_stall_s: float | None = None
    #: The Intermediate daemon never stops a protected workload (vacuous when it is off).
    protected_never_stopped: bool | None = None
    #: The budget cgroup's own peak usage stayed within the budget.
    host_budget_held: bool | None = None
    #: No QEMU was killed by the host OOM killer (false: one must be).
    no_host_oom_kill: bool | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    time_limit_s: float
    guests: tuple[GuestSection, ...]
    expect: Expectations = field(default_factory=Expectations)
    host: HostSection = field(default_factory=HostSection)
    policy: PolicySection = field(default_factory=PolicySection)
    #: What `compare` runs when no --variants is given (empty: off, then on).
    variants: tuple[str, ...] = ()
    source: Path | None = None
    text: str = ""

    # -- views -------------------------------------------------------------------------
    @property
    def vm(self) -> GuestSection:
        """The first guest (the only one in single-[vm] scenarios)."""
        return self.guests[0]

    @property
    def intermediate(self) -> IntermediateSection:
        return self.vm.intermediate

    @property
    def workloads(self) -> tuple[WorkloadSpec, ...]:
        return tuple(w for g in self.guests for w in g.workloads)

    @property
    def protected(self) -> tuple[WorkloadSpec, ...]:
        return tuple(w for g in self.guests for w in g.protected)

    @property
    def balloon(self) -> tuple[BalloonStep, ...]:
        return tuple(s for g in self.guests for s in g.balloon)

    def guest(self, name: str) -> GuestSection:
        for g in self.guests:
            if g.name == name:
                return g
        raise KeyError(name)

    # -- variations (what a compare variant changes) -----------------------------------
    def with_intermediate(self, on: bool) -> Scenario:
        guests = tuple(replace(g, intermediate=replace(g.intermediate, enabled=on and not g.intermediate_opt_out))
                       for g in self.guests)
        return replace(self, guests=guests)

    def with_page_out(self, on: bool) -> Scenario:
        """Every guest's daemon pages its stopped units out (`on`) or leaves them in RAM."""
        guests = tuple(replace(g, intermediate=replace(g.intermediate, page_out=on)) for g in self.guests)
        return replace(self, guests=guests)

    def with_policy(self, kind: PolicyKind) -> Scenario:
        return replace(self, policy=replace(self.policy, kind=kind))

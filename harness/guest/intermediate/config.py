"""Configuration of the Intermediate daemon: plain dataclasses and enums, no parsing here."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields

DEFAULT_STATE_DIR = "/run/balloon-harness/intermediate"
PSI_MEMORY_PATH = "/proc/pressure/memory"

# The harness prefixes its own SSH commands with this environment variable; such
# processes (and whatever they start, since the environment is inherited) are never stopped.
CONTROL_ENV_MARKER = "BALLOON_HARNESS_CONTROL=1"


class FreezeMethod(enum.Enum):
    SIGNAL = "signal"
    CGROUP = "cgroup"


class PageOutVia(enum.Enum):
    """How a stopped unit's memory is paged out (AUTO: memory.reclaim where the unit is a cgroup
    with a memory controller, else process_madvise)."""

    AUTO = "auto"
    RECLAIM = "reclaim"
    MADVISE = "madvise"


OPTION_NAMES = {"stop_interval": "--stop-interval", "resume_headroom": "--resume-headroom",
                "resume_grace": "--resume-grace", "max_stopped": "--max-stopped", "window": "--window",
                "rescan_interval": "--rescan-interval", "file_poll_interval": "the file poll interval",
                "stop_above": "--stop-above", "resume_below": "--resume-below", "hold": "--hold",
                "blocked_report_interval": "--blocked-report-interval"}


def _finite(obj: object) -> None:
    """nan compares false with everything (`--hold nan` never resumed), inf is no duration."""
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{OPTION_NAMES.get(f.name, f.name)} must be a finite number, got {value}")


@dataclass(frozen=True)
class Thresholds:
    """Pressure thresholds in percent of stalled time, and the hysteresis hold."""

    stop_above: float = 20.0
    resume_below: float = 5.0
    hold: float = 2.0

    def validate(self) -> None:
        _finite(self)
        if not 0 < self.stop_above <= 100:
            raise ValueError(f"--stop-above must be in (0, 100], got {self.stop_above}")
        if not 0 <= self.resume_below < self.stop_above:
            raise ValueError(
                f"--resume-below must be >= 0 and below --stop-above ({self.stop_above}), "
                f"got {self.resume_below}"
            )
        if self.hold < 0:
            raise ValueError(f"--hold must be >= 0, got {self.hold}")


@dataclass(frozen=True)
class Selection:
    """Which processes are protected, which are never stopped, and where the daemon may look."""

    protect_pids: tuple[int, ...] = ()
    protect_cgroups: tuple[str, ...] = ()
    protect_comms: tuple[str, ...] = ()
    never_stop_comms: tuple[str, ...] = ()
    never_stop_cgroups: tuple[str, ...] = ()
    scope_pid: int | None = None
    # The scope process's start time: if its pid is recycled, the new process's descendants are
    # not the scope (nothing is).
    scope_starttime: int | None = None
    scope_cgroup: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    selection: Selection = field(default_factory=Selection)
    # None: register PSI triggers on /proc/pressure/memory; a path: poll that file instead.
    pressure_file: str | None = None
    psi_path: str = PSI_MEMORY_PATH
    # Length of the "fast" signal window (the PSI trigger window, or the span over which the
    # stall rate is computed from `total` deltas in file mode).
    window: float = 1.0
    file_poll_interval: float = 0.05
    stop_interval: float = 1.0
    resume_headroom: float = 1.0
    # What must stay available after a resumed unit's swapped-out pages have come back.
    resume_reserve_kb: int = 64 * 1024
    # After a resume, a fast-signal spike alone (the resumed pages coming back) does not stop
    # anything for this long; sustained pressure (avg10 >= stop-above) still does.
    resume_grace: float = 5.0
    max_stopped: float | None = None
    method: FreezeMethod = FreezeMethod.SIGNAL
    # The three rules below are off in a bare DaemonConfig (as in Rules, and in the logs of
    # daemons older than them); the command line turns them on by default (cli.py).
    # A unit whose resident set is below this is not stopped while a unit at least this big is
    # already stopped: stopping it would relieve next to nothing.
    min_rss_kb: int = 0
    # Reclaim a stopped unit's memory at once (memory.reclaim of its cgroup, else
    # process_madvise(MADV_PAGEOUT)), instead of leaving it to the kernel's global reclaim.
    page_out: bool = False
    page_out_via: PageOutVia = PageOutVia.AUTO
    # PSI mode: a second trigger at this fraction of stop-above prepares the scan a stop will need
    # (0 disables it).
    early_fraction: float = 0.5
    # While a resume waits (pressure, headroom), repeat its `resume-blocked` event this often
    # (None: only the first headroom refusal of a holding spell is reported).
    blocked_report_interval: float | None = None
    state_dir: str = DEFAULT_STATE_DIR
    events_path: str | None = None
    control_path: str | None = None
    dry_run: bool = False
    # How often stopped processes are re-checked (gone? reclassified?) while nothing is decided.
    rescan_interval: float = 2.0
    mlock: bool = False

    def validate(self) -> None:
        _finite(self)
        self.thresholds.validate()
        if not 0.5 <= self.window <= 10.0:
            raise ValueError(f"--window must be between 0.5 and 10 seconds, got {self.window}")
        if not 0 < self.file_poll_interval <= 0.1:
            raise ValueError("the pressure file must be polled at least 10 times a second")
        if self.stop_interval <= 0:
            raise ValueError(f"--stop-interval must be > 0, got {self.stop_interval}")
        if self.resume_headroom < 0:
            raise ValueError(f"--resume-headroom must be >= 0, got {self.resume_headroom}")
        if self.resume_grace < 0:
            raise ValueError(f"--resume-grace must be >= 0, got {self.resume_grace}")
        if self.resume_reserve_kb < 0:
            raise ValueError(f"--resume-reserve must be >= 0, got {self.resume_reserve_kb // 1024}")
        if self.max_stopped is not None and self.max_stopped <= 0:
            raise ValueError(f"--max-stopped must be > 0, got {self.max_stopped}")
        if self.min_rss_kb < 0:
            raise ValueError(f"--min-rss must be >= 0, got {self.min_rss_kb // 1024}")
        if not 0 <= self.early_fraction < 1:
            raise ValueError(f"--early-fraction must be in [0, 1), got {self.early_fraction}")
        if self.blocked_report_interval is not None and self.blocked_report_interval <= 0:
            raise ValueError(f"--blocked-report-interval must be > 0, got {self.blocked_report_interval}")

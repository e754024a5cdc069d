"""`balloon-harness bench`: how fast a guest becomes usable here, as figures (never asserted).

Prints a table and, as its last line, one JSON object for CI to archive.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.machine.factory import MachineFactory
from harness.session import HarnessOptions, HarnessSession


@dataclass
class Series:
    label: str
    seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def time_to_ready(factory: MachineFactory, **spec_changes) -> tuple[float, float | None]:
    """Launch to a working SSH command; also QEMU's RSS once ready."""
    machine = factory.create(**spec_changes)
    started = time.monotonic()
    machine.start()
    took = time.monotonic() - started
    rss = machine.host_rss_mib()
    factory.close()
    return took, rss


def measure(series: Series, repeats: int, once: Callable[[], tuple[float, float | None]],
            log: Callable[[str], None]) -> Series:
    for i in range(repeats):
        took, rss = once()
        series.seconds.append(took)
        if rss:
            series.rss_mib.append(rss)
        log(f"{series.label} #{i + 1}: {took:.2f} s")
    return series


def run_bench(options: HarnessOptions, repeats: int = 3,
              log: Callable[[str], None] = print) -> dict:
    session = HarnessSession.open(options, progress=log)
    factory = session.factory()
    cold = measure(Series("cold boot to SSH"), repeats, lambda: time_to_ready(factory, name="bench"), log)
    result = {
        "accel": session.accel.value,
        "cold_boot_s": round(cold.median, 2),
        "cold_boot_all_s": [round(s, 2) for s in cold.seconds],
        "qemu_rss_mib": round(statistics.median(cold.rss_mib), 1) if cold.rss_mib else None,
        "memory_mib": options.memory_mib,
        "cpus": options.cpus,
    }
    return result


def render(result: dict) -> str:
    lines = [f"accelerator: {result['accel']}  (guest {result['cpus']} vCPU, {result['memory_mib']} MiB)",
             f"{'measure':<34}{'median':>10}   all runs"]
    for key, label in (("naive_boot_s", "naive Debian + cloud-init to SSH"),
                       ("cold_boot_s", "harness cold boot to SSH"),
                       ("restore_ready_s", "harness restore to ready")):
        if key in result:
            runs = ", ".join(f"{s:.2f}" for s in result.get(key.replace("_s", "_all_s"), []))
            lines.append(f"{label:<34}{result[key]:>9.2f}s   {runs}")
    if result.get("qemu_rss_mib"):
        lines.append(f"{'QEMU RSS per VM (ready)':<34}{result['qemu_rss_mib']:>8.0f}MiB")
    return "\n".join(lines)


def main_bench(options: HarnessOptions, repeats: int) -> int:
    result = run_bench(options, repeats)
    print(render(result))
    print(json.dumps(result))
    return 0

"""`balloon-harness bench`: how fast a guest becomes usable here, as figures (never asserted).

Prints a table and, as its last line, one JSON object for CI to archive.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import resources
from harness.guestcode import install_guest_code
from harness.image.build import ensure_built_image
from harness.image.recipe import Recipe
from harness.machine.factory import MachineFactory
from harness.runtime import current_run
from harness.session import HarnessOptions, HarnessSession

NAIVE_RECIPE = "debian-bookworm-naive"


@dataclass
class Series:
    label: str
    seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def time_to_ready(factory: MachineFactory, **spec_changes) -> tuple[float, float | None]:
    """Launch (or restore) to a working SSH command; also QEMU's RSS once ready. For the
    naive image that is when cloud-init has installed the key, not when it has finished."""
    started = time.monotonic()
    if factory.snapshots is not None:
        machine = factory.start(settle=False, **spec_changes)
    else:
        machine = factory.create(**spec_changes)
        machine.wait_for_cloud_init = False
        machine.start()
    took = time.monotonic() - started
    rss = machine.host_rss_mib()
    factory.close()
    return took, rss


def time_to_booted(factory: MachineFactory, **spec_changes) -> tuple[float, float | None]:
    """Launch to "systemd has finished booting" (what the `vm` fixture waits for)."""
    started = time.monotonic()
    machine = factory.start(**spec_changes)
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


def run_bench(options: HarnessOptions, repeats: int = 3, naive: bool = True, guest_daemon: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Naive image, harness cold boot and restore, side by side in one run on this machine."""
    session = HarnessSession.open(options, progress=log)
    result: dict = {"accel": session.accel.value, "memory_mib": options.memory_mib, "cpus": options.cpus}
    if naive:
        # Stock Debian + cloud-init, built once by the bench (cached like any image).
        naive_image = ensure_built_image(Recipe.named(NAIVE_RECIPE), session.cache, log)
        naive_factory = MachineFactory(naive_image, session.accel, session.key, current_run(),
                                       defaults=options.vm_spec(session.accel, name="naive"))
        series = measure(Series("naive Debian + cloud-init to SSH"), repeats,
                         lambda: time_to_ready(naive_factory, name="naive"), log)
        result.update(naive_boot_s=round(series.median, 2), naive_boot_all_s=_r(series.seconds))
    cold_factory = session.factory(fresh_boot=True)
    cold = measure(Series("harness cold boot to SSH"), repeats, lambda: time_to_ready(cold_factory, name="cold"), log)
    result.update(cold_boot_s=round(cold.median, 2), cold_boot_all_s=_r(cold.seconds))
    settled = measure(Series("harness cold boot, boot finished"), repeats,
                      lambda: time_to_booted(cold_factory, name="settled"), log)
    result.update(cold_booted_s=round(settled.median, 2), cold_booted_all_s=_r(settled.seconds))
    warm_factory = session.factory(fresh_boot=False)
    warm_factory.start(name="prime")  # make the saved state now: creating it is not a restore
    warm_factory.close()
    restore = measure(Series("harness restore to ready"), repeats,
                      lambda: time_to_ready(warm_factory, name="restored"), log)
    result.update(restore_ready_s=round(restore.median, 2), restore_ready_all_s=_r(restore.seconds))
    rss = cold.rss_mib + restore.rss_mib
    result["qemu_rss_mib"] = round(statistics.median(rss), 1) if rss else None
    result["qemu_rss_cold_mib"] = round(statistics.median(cold.rss_mib), 1) if cold.rss_mib else None
    result["qemu_rss_restored_mib"] = round(statistics.median(restore.rss_mib), 1) if restore.rss_mib else None
    if naive:
        result["cold_vs_naive"] = round(result["cold_boot_s"] / result["naive_boot_s"], 3)
    if guest_daemon:
        result.update(guest_daemon_bench(session, log))
    return result


def _r(values: list[float]) -> list[float]:
    return [round(v, 2) for v in values]


def guest_daemon_bench(session: HarnessSession, log: Callable[[str], None]) -> dict:
    """The Intermediate daemon's own benchmark, inside a guest: reaction to real PSI
    pressure (trigger mode) and idle CPU."""
    factory = session.factory()
    try:
        machine = factory.start(name="daemon-bench")
        install_guest_code(machine)
        machine.ssh.run("mkdir -p /opt/balloon-harness/bench")
        machine.ssh.put(resources.data_dir("bench") / "bench_intermediate.py",
                        "/opt/balloon-harness/bench/bench_intermediate.py")
        log("daemon benchmark in the guest (file mode, idle CPU, real PSI pressure)")
        out = machine.ssh.run("cd /opt/balloon-harness && python3 bench/bench_intermediate.py --psi "
                              "--trials 5 --psi-trials 3 --idle-seconds 10", timeout=900).stdout
    finally:
        factory.close()
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines[:-1]:
        log(f"  guest: {line}")
    data = json.loads(lines[-1])
    return {f"guest_{key}": value for key, value in data.items()}


def render(result: dict) -> str:
    lines = [f"accelerator: {result['accel']}  (guest {result['cpus']} vCPU, {result['memory_mib']} MiB)",
             f"{'measure':<34}{'median':>10}   all runs"]
    for key, label in (("naive_boot_s", "naive Debian + cloud-init to SSH"),
                       ("cold_boot_s", "harness cold boot to SSH"),
                       ("cold_booted_s", "harness cold boot, boot finished"),
                       ("restore_ready_s", "harness restore to ready")):
        if key in result:
            runs = ", ".join(f"{s:.2f}" for s in result.get(key.replace("_s", "_all_s"), []))
            lines.append(f"{label:<34}{result[key]:>9.2f}s   {runs}")
    if result.get("qemu_rss_mib"):
        lines.append(f"{'QEMU RSS per VM (ready)':<34}{result['qemu_rss_mib']:>8.0f}MiB   "
                     f"cold {result.get('qemu_rss_cold_mib')}, restored {result.get('qemu_rss_restored_mib')}")
    if "cold_vs_naive" in result:
        lines.append(f"{'cold boot / naive boot':<34}{result['cold_vs_naive']:>10.2f}")
    for key, label in (("guest_reaction_ms_psi_trigger_median", "daemon reaction, real PSI (guest)"),
                       ("guest_reaction_ms_file_median", "daemon reaction, file source (guest)"),
                       ("guest_idle_cpu_percent", "daemon idle CPU % (guest)")):
        if key in result:
            lines.append(f"{label:<34}{result[key]:>10}")
    return "\n".join(lines)


def main_bench(options: HarnessOptions, repeats: int, naive: bool = True, guest_daemon: bool = True) -> int:
    result = run_bench(options, repeats, naive=naive, guest_daemon=guest_daemon)
    # The contract keys, last line, one JSON object.
    print(render(result))
    head = {k: result.get(k) for k in ("accel", "naive_boot_s", "cold_boot_s", "restore_ready_s", "qemu_rss_mib")}
    print(json.dumps({**head, **result}))
    return 0

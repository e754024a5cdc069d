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
from harness.balloon import BalloonController
from harness.config import Backend
from harness.errors import HarnessError
from harness.guestcode import install_guest_code
from harness.hostcost import group_memory, measure_cpu
from harness.image.build import ensure_built_image
from harness.image.recipe import Recipe
from harness.machine.factory import MachineFactory
from harness.machine.sharedram import RamMode
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
              log: Callable[[str], None] = print, restores: int = 5, libvirt: bool = True) -> dict:
    """Naive image, harness cold boot and restore (both RAM paths), the cost of many guests,
    libvirt, the daemon: side by side in one run on this machine."""
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
    restore = {mode: restore_series(session, mode, restores, log) for mode in (RamMode.SHARED, RamMode.STREAMED)}
    shared, streamed = restore[RamMode.SHARED], restore[RamMode.STREAMED]
    result.update(restore_ready_s=round(shared.median, 2), restore_ready_all_s=_r(shared.seconds),
                  restore_breakdown=shared.breakdown(), restore_mode=shared.mode,
                  restore_streamed_s=round(streamed.median, 2), restore_streamed_all_s=_r(streamed.seconds),
                  restore_streamed_breakdown=streamed.breakdown())
    result["restore_vs_streamed"] = round(shared.median / streamed.median, 3)
    rss = cold.rss_mib + shared.rss_mib
    result["qemu_rss_mib"] = round(statistics.median(rss), 1) if rss else None
    result["qemu_rss_cold_mib"] = round(statistics.median(cold.rss_mib), 1) if cold.rss_mib else None
    result["qemu_rss_restored_mib"] = round(statistics.median(shared.rss_mib), 1) if shared.rss_mib else None
    result.update(many_guests(session, log))
    if libvirt:
        result.update(libvirt_bench(session, repeats, log))
    if naive:
        result["cold_vs_naive"] = round(result["cold_boot_s"] / result["naive_boot_s"], 3)
    if guest_daemon:
        result.update(guest_daemon_bench(session, log))
        if "guest_reaction_ms_psi_trigger_median" in result:
            result["daemon_reaction_guest_s"] = round(result["guest_reaction_ms_psi_trigger_median"] / 1000, 3)
    return result


@dataclass
class RestoreSeries(Series):
    mode: str = ""
    phases: list[dict[str, float]] = field(default_factory=list)

    def breakdown(self) -> dict[str, float]:
        """Median seconds per phase of a restore (QEMU start, device state [+ RAM], cont,
        first SSH, per-VM fix-ups)."""
        names = [name for name in self.phases[0]] if self.phases else []
        return {f"{name}_s": round(statistics.median(p.get(name, 0.0) for p in self.phases), 3) for name in names}


def restore_series(session: HarnessSession, mode: RamMode, repeats: int,
                   log: Callable[[str], None]) -> RestoreSeries:
    """Restore to ready, `repeats` times, with the RAM mapped from the saved image (SHARED) or
    streamed in full (STREAMED, the older path)."""
    factory = session.factory(fresh_boot=False)
    factory.ram_mode = mode
    factory.start(name="prime", settle=False)  # each path has its own saved state: make it now
    factory.close()
    series = RestoreSeries(f"restore to ready ({mode.value} RAM)")
    for i in range(repeats):
        started = time.monotonic()
        machine = factory.start(name="restored", settle=False)
        series.seconds.append(time.monotonic() - started)
        series.phases.append(dict(machine.clock.phases))
        series.mode = machine.ram_mode.value if machine.ram_mode else "?"
        if (memory := machine.process_memory()) is not None:
            series.rss_mib.append(memory.rss_mib)
        factory.close()
        log(f"{series.label} #{i + 1}: {series.seconds[-1]:.2f} s  "
            + " ".join(f"{k} {v:.2f}" for k, v in series.phases[-1].items()))
    return series


#: Idle guests are measured over this window (percent of a core from /proc/PID/stat).
IDLE_WINDOW_S = 20.0


def many_guests(session: HarnessSession, log: Callable[[str], None], count: int = 4) -> dict:
    """Idle guests restored from one saved state: host memory of one alone, then of `count`
    together (PSS: pages they share counted once), for both RAM paths; idle CPU with one and
    with `count`; what the balloon gives back from a guest that maps the shared RAM image."""
    result: dict = {}
    for mode in (RamMode.SHARED, RamMode.STREAMED):
        key = "restored" if mode is RamMode.SHARED else "streamed"
        factory = session.factory(fresh_boot=False)
        factory.ram_mode = mode
        try:
            first = factory.start(name="idle0")
            one = group_memory([m for m in [first.process_memory()] if m])
            if mode is RamMode.SHARED:
                cpu_one = measure_cpu([first.host_pid()], IDLE_WINDOW_S)
            guests = [first] + [factory.start(name=f"idle{i}") for i in range(1, count)]
            together = group_memory([m for g in guests if (m := g.process_memory())])
            result[f"rss_1_{key}_mib"] = one.total_mib
            result[f"rss_{count}_{key}_mib"] = together.total_mib
            result[f"memory_{count}_{key}"] = together.__dict__
            log(f"{count} idle guests ({mode.value} RAM): {together.total_mib:.0f} MiB together (PSS; "
                f"RSS would add up to {together.rss_sum_mib:.0f}), one alone {one.total_mib:.0f} MiB")
            if mode is RamMode.SHARED:
                cpu_all = measure_cpu([g.host_pid() for g in guests], IDLE_WINDOW_S)
                result.update(idle_cpu_pct_1=cpu_one.mean_percent, idle_cpu_pct_4=cpu_all.mean_percent,
                              idle_cpu_pct_4_each=list(cpu_all.percent), idle_window_s=IDLE_WINDOW_S)
                log(f"idle CPU per guest: 1 guest {cpu_one.mean_percent:.1f} %, {count} guests "
                    f"{cpu_all.mean_percent:.1f} % of a core each")
                result.update(balloon_return(first, log))
        finally:
            factory.close()
    result["density_ratio"] = round(result[f"rss_{count}_restored_mib"] / result["rss_1_restored_mib"], 2)
    result["density_ratio_streamed"] = round(result[f"rss_{count}_streamed_mib"] / result["rss_1_streamed_mib"], 2)
    return result


def balloon_return(machine, log: Callable[[str], None], dirty_mib: int = 256) -> dict:
    """The guest writes `dirty_mib` (private copies of shared pages), frees them, then the
    balloon takes that much: how much host memory came back, and is the template intact?"""
    machine.ssh.run(f"python3 -c 'b = bytearray({dirty_mib} << 20); b[::4096] = b\"x\" * ({dirty_mib} << 8)'")
    before = machine.process_memory()
    target = machine.spec.memory_mib - dirty_mib - 64
    reached = BalloonController(machine.balloon).resize(target, timeout=machine.timeouts.command * 4).reached
    after = machine.process_memory()
    intact = machine.saved.ram_image_intact() if machine.saved else None
    returned = round(before.rss_anon_mib - after.rss_anon_mib, 1) if before and after else None
    log(f"balloon to {target} MiB (reached: {reached}) gave back {returned} MiB of private memory; "
        f"saved RAM image unchanged: {intact}")
    return {"balloon_returned_mib": returned, "balloon_target_mib": target, "balloon_reached": reached,
            "ram_image_intact_after_balloon": intact}


def libvirt_bench(session: HarnessSession, repeats: int, log: Callable[[str], None]) -> dict:
    """libvirt's launch to ready beside the direct backend's (libvirt domains always boot)."""
    factory = session.factory(fresh_boot=True)
    factory.defaults = factory.defaults.with_(backend=Backend.LIBVIRT)
    try:
        series = measure(Series("libvirt cold boot to SSH"), repeats,
                         lambda: time_to_ready(factory, name="lv"), log)
    except HarnessError as exc:
        log(f"libvirt skipped: {exc}")
        return {"libvirt_cold_boot_s": None, "libvirt_skipped": str(exc).splitlines()[0]}
    return {"libvirt_cold_boot_s": round(series.median, 2), "libvirt_cold_boot_all_s": _r(series.seconds)}


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
             f"{'measure':<40}{'median':>10}   all runs"]
    for key, label in (("naive_boot_s", "naive Debian + cloud-init to SSH"),
                       ("cold_boot_s", "harness cold boot to SSH"),
                       ("cold_booted_s", "harness cold boot, boot finished"),
                       ("restore_ready_s", "restore to ready (shared RAM image)"),
                       ("restore_streamed_s", "restore to ready (RAM streamed, old)"),
                       ("libvirt_cold_boot_s", "libvirt cold boot to SSH")):
        if result.get(key) is not None:
            runs = ", ".join(f"{s:.2f}" for s in result.get(key.replace("_s", "_all_s"), []))
            lines.append(f"{label:<40}{result[key]:>9.2f}s   {runs}")
    for key, label in (("restore_breakdown", "  shared restore, median per phase"),
                       ("restore_streamed_breakdown", "  streamed restore, median per phase")):
        if key in result:
            lines.append(f"{label}: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in result[key].items()))
    if result.get("qemu_rss_mib"):
        lines.append(f"{'QEMU RSS per VM (ready)':<40}{result['qemu_rss_mib']:>8.0f}MiB   "
                     f"cold {result.get('qemu_rss_cold_mib')}, restored {result.get('qemu_rss_restored_mib')}")
    for key, label, unit in (("rss_1_restored_mib", "1 idle restored guest (PSS)", "MiB"),
                             ("rss_4_restored_mib", "4 idle restored guests together", "MiB"),
                             ("density_ratio", "  4 guests / 1 guest (shared RAM)", ""),
                             ("density_ratio_streamed", "  4 guests / 1 guest (streamed RAM)", ""),
                             ("balloon_returned_mib", "balloon gave back (shared RAM guest)", "MiB"),
                             ("idle_cpu_pct_1", "idle CPU, 1 guest (% of a core)", ""),
                             ("idle_cpu_pct_4", "idle CPU, 4 guests (% each)", ""),
                             ("cold_vs_naive", "cold boot / naive boot", ""),
                             ("daemon_reaction_guest_s", "daemon reaction, real PSI (guest, s)", ""),
                             ("guest_reaction_ms_file_median", "daemon reaction, file source (ms)", ""),
                             ("guest_idle_cpu_percent", "daemon idle CPU % (guest)", "")):
        if result.get(key) is not None:
            lines.append(f"{label:<40}{result[key]:>10}{unit}")
    return "\n".join(lines)


#: The figures issue 13 asks for, first in the last JSON line.
CONTRACT_KEYS = ("accel", "naive_boot_s", "cold_boot_s", "restore_ready_s", "restore_breakdown",
                 "restore_streamed_s", "rss_1_restored_mib", "rss_4_restored_mib", "idle_cpu_pct_1",
                 "idle_cpu_pct_4", "daemon_reaction_guest_s", "libvirt_cold_boot_s", "qemu_rss_mib")


def main_bench(options: HarnessOptions, repeats: int, naive: bool = True, guest_daemon: bool = True,
               libvirt: bool = True) -> int:
    result = run_bench(options, repeats, naive=naive, guest_daemon=guest_daemon, libvirt=libvirt)
    print(render(result))
    head = {k: result.get(k) for k in CONTRACT_KEYS}
    print(json.dumps({**head, **result}))
    return 0

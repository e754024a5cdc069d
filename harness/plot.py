"""The run's picture: one lane per guest (memory; pressure and workload progress) and a host
lane (the budget cgroup, host swap, each QEMU's resident memory), over time, with the
Intermediate daemon's stop/resume decisions and VM deaths marked. Legends sit to the right of
the plots, never over the lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI machines
import matplotlib.pyplot as plt

from harness.ledger import HOST_ROW, Ledger

LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "borderaxespad": 0.0}
MEMORY_LINES = (("balloon_target_mib", "balloon target", "k--"),
                ("balloon_actual_mib", "balloon actual", "k-"),
                ("guest_mem_total_mib", "guest MemTotal", "C0-"),
                ("guest_mem_available_mib", "guest MemAvailable", "C2-"),
                ("guest_swap_used_mib", "guest swap used", "C3-"),
                ("qemu_rss_mib", "QEMU RSS (host)", "C7:"),
                ("qemu_swap_mib", "QEMU swapped out (host)", "C5:"))


def plot_run(ledger: Ledger, events: dict[str, list[dict]], title: str, out: Path,
             units: dict[str, str] | None = None, deaths: list[dict] | None = None) -> Path:
    """`events`: per guest, the daemon's events (with `t_host`); `units`: per workload, what
    its progress counts; `deaths`: harness `vm-died` events."""
    vms = ledger.vms
    units = units or {}
    heights = [r for _ in vms for r in (3, 2)] + [2.5]
    fig, axes = plt.subplots(len(heights), 1, figsize=(13, 2.1 * len(heights) + 1.0), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]
    for i, vm in enumerate(vms):
        mem, psi = axes[2 * i], axes[2 * i + 1]
        _guest_memory(mem, ledger, vm)
        _guest_pressure(psi, ledger, vm, units)
        _marks((mem, psi), events.get(vm, []), ledger.t0)
    _host_lane(axes[-1], ledger)
    for death in deaths or []:
        x = death["t"] - ledger.t0
        for ax in axes:
            ax.axvline(x, color="black", linewidth=1.6, alpha=0.8)
        axes[-1].annotate(f"{death['vm']} died", (x, 1), xycoords=("data", "axes fraction"), fontsize=8,
                          rotation=90, va="top", ha="right")
    axes[-1].set_xlabel("seconds since the run started")
    fig.suptitle(title + "\n(red: the daemon stops a process, green: resumes it; black: a VM died)", fontsize=10)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def _guest_memory(ax, ledger: Ledger, vm: str) -> None:
    for column, label, style in MEMORY_LINES:
        xs, ys = ledger.series(column, vm)
        if xs:
            # The target is what the host set: draw it as steps (a ramp shows each step).
            if column == "balloon_target_mib":
                ax.step(xs, ys, style, where="post", label=label, linewidth=1.2)
            else:
                ax.plot(xs, ys, style, label=label, linewidth=1.3)
    ax.set_ylabel(f"{vm}\nMiB")
    ax.set_title(f"guest {vm}: memory", fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**LEGEND)


def _guest_pressure(ax, ledger: Ledger, vm: str, units: dict[str, str]) -> None:
    for column, label, style in (("psi_some_avg10", "PSI some avg10 (%)", "C1-"),
                                 ("psi_full_avg10", "PSI full avg10 (%)", "C3-")):
        xs, ys = ledger.series(column, vm)
        if xs:
            ax.plot(xs, ys, style, label=label)
    xs, ys = ledger.series("daemon_stopped", vm)
    if xs and any(ys):
        ax.step(xs, [y * 10 for y in ys], "C4-", where="post", label="stopped by the daemon (×10 %)")
    ax.set_ylabel("% stalled")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    progress = ax.twinx()
    for i, name in enumerate(ledger.workloads.get(vm, [])):
        xs, ys = ledger.series(f"progress_{name}", vm)
        if xs:
            peak = max(ys) or 1
            unit = units.get(name, "")
            progress.plot(xs, [100 * y / peak for y in ys], f"C{(i + 5) % 10}--", linewidth=1.0,
                          label=f"{name}: {peak:g} {unit} at the end")
    progress.set_ylabel("progress (% of final)")
    progress.set_ylim(0, 105)
    ax.set_title(f"guest {vm}: pressure and workload progress", fontsize=9, loc="left")
    handles, labels = ax.get_legend_handles_labels()
    extra = progress.get_legend_handles_labels()
    if handles or extra[0]:
        ax.legend(handles + extra[0], labels + extra[1], loc="upper left", bbox_to_anchor=(1.06, 1.0),
                  fontsize=8, borderaxespad=0.0)


def _host_lane(ax, ledger: Ledger) -> None:
    xs, ys = ledger.series("budget_usage_mib", HOST_ROW)
    if xs:
        ax.plot(xs, ys, "k-", label="budget cgroup usage")
        bx, budget = ledger.series("budget_mib", HOST_ROW)
        ax.plot(bx, budget, "r--", label="budget")
        fx, file_mib = ledger.series("budget_file_mib", HOST_ROW)
        ax.plot(fx, file_mib, "C8:", label="of which page cache")
        sx, swap = ledger.series("host_swap_used_mib", HOST_ROW)
        if sx:
            ax.plot(sx, swap, "C3-", label="host swap used")
    for i, vm in enumerate(ledger.vms):
        vx, rss = ledger.series("qemu_rss_mib", vm)
        if vx:
            ax.plot(vx, rss, f"C{i % 10}:", label=f"QEMU RSS of {vm}")
    ax.set_ylabel("host\nMiB")
    ax.set_title("host: the scenario's memory budget", fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**LEGEND)


def _marks(axes, events: list[dict], t0: float) -> None:
    for event in events:
        kind = event.get("event")
        if kind in ("stop", "resume") and "t" in event:
            x = event.get("t_host", event["t"]) - t0
            for ax in axes:
                ax.axvline(x, color="red" if kind == "stop" else "green", alpha=0.35, linewidth=0.8)

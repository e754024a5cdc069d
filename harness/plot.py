"""The run's picture: balloon and memory, pressure and stopped processes, workload progress,
over time, with the Intermediate daemon's stop/resume decisions marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI machines
import matplotlib.pyplot as plt

from harness.ledger import Ledger


def plot_run(ledger: Ledger, events: list[dict], title: str, out: Path) -> Path:
    fig, (mem, psi, work) = plt.subplots(3, 1, figsize=(11, 9), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2, 2]})
    for column, label, style in (("balloon_target_mib", "balloon target", "k--"),
                                 ("balloon_actual_mib", "balloon actual", "k-"),
                                 ("guest_mem_total_mib", "guest MemTotal", "C0-"),
                                 ("guest_mem_available_mib", "guest MemAvailable", "C2-"),
                                 ("guest_swap_used_mib", "guest swap used", "C3-"),
                                 ("host_qemu_rss_mib", "QEMU RSS (host)", "C7:")):
        xs, ys = ledger.series(column)
        if xs:
            mem.plot(xs, ys, style, label=label, linewidth=1.4)
    mem.set_ylabel("MiB")
    mem.legend(loc="upper right", fontsize=8, ncol=2)
    mem.grid(alpha=0.3)

    for column, label, style in (("psi_some_avg10", "PSI some avg10", "C1-"),
                                 ("psi_full_avg10", "PSI full avg10", "C3-")):
        xs, ys = ledger.series(column)
        if xs:
            psi.plot(xs, ys, style, label=label)
    psi.set_ylabel("% stalled")
    psi.grid(alpha=0.3)
    stopped = psi.twinx()
    xs, ys = ledger.series("daemon_stopped")
    if xs and any(ys):
        stopped.step(xs, ys, "C4-", where="post", label="held stopped by the daemon")
        stopped.set_ylabel("processes stopped", color="C4")
        stopped.set_ylim(0, max(ys) + 1)
    lines = psi.get_legend_handles_labels()
    extra = stopped.get_legend_handles_labels()
    psi.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)

    for i, name in enumerate(ledger.workload_names):
        xs, ys = ledger.series(f"progress_{name}")
        if xs:
            peak = max(ys) or 1
            work.plot(xs, [y / peak for y in ys], f"C{i % 10}-", label=f"{name} (max {peak:g})")
    work.set_ylabel("progress (fraction of max)")
    work.set_xlabel("seconds since the run started")
    work.legend(loc="lower right", fontsize=8)
    work.grid(alpha=0.3)

    t0 = ledger.t0
    for event in events:
        kind = event.get("event")
        if kind in ("stop", "resume") and "t" in event:
            x = event.get("t_host", event["t"]) - t0
            for ax in (mem, psi, work):
                ax.axvline(x, color="red" if kind == "stop" else "green", alpha=0.35, linewidth=0.8)
    fig.suptitle(title + "   (red: daemon stops a process, green: resumes it)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

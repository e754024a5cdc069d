"""The `balloon-harness` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from rich.console import Console
from rich.table import Table

from harness.errors import HarnessError

# Logs (CI, `make demo | tee`) are not terminals; rich would wrap the comparison table at 80
# columns there, so give it room unless COLUMNS says otherwise.
console = Console(stderr=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 110)


def _options_args(parser: argparse.ArgumentParser) -> None:
    from harness.session import HarnessOptions, env_default
    defaults = HarnessOptions  # its field defaults, shared with the pytest options
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=env_default("ACCEL", defaults.accel))
    parser.add_argument("--image", default=env_default("IMAGE", "") or None,
                        help="recipe name, cloud image path, or URL#sha256=HEX")
    parser.add_argument("--memory", type=int, default=defaults.memory_mib, help="MiB")
    parser.add_argument("--cpus", type=int, default=defaults.cpus)
    parser.add_argument("--swap", default=defaults.swap, help="none, file:MIB or zram:MIB")
    parser.add_argument("--backend", choices=["qemu", "libvirt"], default=env_default("BACKEND", defaults.backend))
    parser.add_argument("--libvirt-uri", default=env_default("LIBVIRT_URI", "") or None)


def _options(args: argparse.Namespace):
    from harness.session import HarnessOptions
    return HarnessOptions(accel=args.accel, image=args.image, memory_mib=args.memory,
                          cpus=args.cpus, swap=args.swap, backend=args.backend,
                          libvirt_uri=args.libvirt_uri)


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import run_checks
    table = Table(title="balloon-harness doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    failed = False
    for check in run_checks():
        status = "[green]ok[/]" if check.ok else ("[red]missing[/]" if check.required else "[yellow]no[/]")
        failed |= check.required and not check.ok
        table.add_row(check.name, status, check.detail, "" if check.ok else check.fix)
    console.print(table)
    return 1 if failed else 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from harness.image.build import ensure_built_image
    from harness.image.recipe import Recipe
    with console.status("building the guest image") as status:
        image = ensure_built_image(Recipe.named(args.recipe), force=args.force,
                                   progress=lambda msg: (status.update(msg), console.log(msg)))
    console.print(f"[green]image ready:[/] {image.disk}\n  kernel {image.kernel}\n  initrd {image.initrd}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from harness.session import HarnessSession
    session = HarnessSession.open(_options(args), progress=console.log)
    factory = session.factory()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status(f"booting {args.name} ({session.accel.value})"):
            machine = factory.start(name=args.name)
        took = (machine.ready_at or 0) - (machine.started_at or 0)
        console.print(f"[green]{machine.name} is ready[/] after {took:.1f} s ({session.accel.value}). Log in with:")
        # Plain print: one unwrapped line, to copy and paste.
        print(f"ssh -i {session.key.private_path} -p {machine.ssh_port} -o StrictHostKeyChecking=yes "
              f"-o UserKnownHostsFile={machine.known_hosts_file()} -o LogLevel=ERROR "
              f"{session.image.ssh_user}@127.0.0.1", flush=True)
        console.print(f"Serial console log: {machine.serial_log}\nPress Ctrl-C to stop it.", soft_wrap=True)
        while not stop.wait(0.5):
            if (reason := machine.abort_reason()):
                console.print(f"[red]{machine.name} stopped:[/] {reason}")
                break
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        factory.close()
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    from harness.reaper import reap
    report = reap(libvirt_uri=args.libvirt_uri, include_libvirt=not args.no_libvirt,
                  purge=args.purge, keep_days=args.keep_days)
    console.print(report.summary())
    for pid in report.killed_pids:
        console.print(f"  killed QEMU pid {pid}")
    for name in report.destroyed_domains:
        console.print(f"  destroyed libvirt domain {name}")
    for name, why in report.kept_domains:
        console.print(f"  left libvirt domain {name}: {why}")
    for run_id, path in report.kept_evidence.items():
        print(f"  evidence of killed run {run_id}: {path}")  # plain print: a path to copy
    for run_id in report.removed_runs:
        console.print(f"  removed run {run_id}")
    for item in report.host_leftovers:
        console.print(f"  removed {item}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import main_bench
    return main_bench(_options(args), args.repeats, naive=not args.no_naive, guest_daemon=not args.no_daemon,
                      libvirt=not args.no_libvirt)


def _scenario_factory(args: argparse.Namespace):
    from harness.session import HarnessSession
    session = HarnessSession.open(_options(args), progress=console.log)
    return session, session.factory()


def _print_run(result) -> None:
    for e in result.failures() + [e for e in result.expectations if e.passed]:
        mark = "[green]pass[/]" if e.passed else "[red]FAIL[/]"
        console.print(f"  {mark} {e.name}: {e.detail}", highlight=False)


def _load(args: argparse.Namespace):
    from harness.scenario.model import find_scenario, load_scenario
    return load_scenario(find_scenario(args.scenario))


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.scenario.runner import new_run_folder, run_scenario
    from harness.scenario.table import summary_table
    scenario = _load(args)
    variant = args.variant or {"on": "on", "off": "off", "scenario": None}[args.intermediate]
    session, factory = _scenario_factory(args)
    folder = new_run_folder(Path(args.runs), scenario)
    console.print(f"run folder {folder}")
    try:
        with console.status(f"running {scenario.name}") as status:
            result = run_scenario(scenario, factory, folder, variant=variant,
                                  progress=lambda m: (status.update(m), console.log(m)))
    finally:
        factory.close()
    console.print(summary_table([result.summary]))
    console.print(f"run folder: {result.folder}\nplot: {result.summary['plot']}")
    _print_run(result)
    return 0 if result.passed else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.scenario.runner import compare_variants, new_run_folder
    from harness.scenario.table import summary_table, verdict
    from harness.scenario.variants import parse_variants
    scenario = _load(args)
    variants = parse_variants(args.variants, scenario)
    session, factory = _scenario_factory(args)
    folder = new_run_folder(Path(args.runs), scenario)
    console.print(f"[bold]{scenario.name}[/]: {scenario.description}\n"
                  f"variants {', '.join(v.name for v in variants)}; accelerator {session.accel.value}; "
                  f"each run gets fresh guests; run folder {folder}")
    try:
        with console.status(f"comparing {scenario.name}") as status:
            results = compare_variants(scenario, factory, folder, variants,
                                       progress=lambda m: (status.update(m), console.log(m)))
    finally:
        factory.close()
    summaries = [r.summary for r in results]
    console.print(summary_table(summaries))
    for other in summaries[1:]:
        console.print(verdict(summaries[0], other))
    console.print("plots: " + "\n       ".join(s["plot"] for s in summaries) + f"\nsummary: {folder / 'summary.json'}")
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.print(f"[red]{r.mode}: expectations failed[/]")
        _print_run(r)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.errors import ConfigError
    from harness.scenario.rebuild import build_report, is_run_folder
    from harness.scenario.runner import write_comparison
    from harness.scenario.table import summary_table, verdict
    folder = Path(args.run_dir)
    runs = [folder] if is_run_folder(folder) else sorted(p for p in folder.iterdir() if is_run_folder(p)) \
        if folder.is_dir() else []
    if not runs:
        raise ConfigError(f"{folder} holds no run (no run.json in it or in its subfolders).",
                          fix="give a folder that `balloon-harness run` or `compare` printed.")
    reports = [build_report(r) for r in runs]
    summaries = [r.summary for r in reports]
    if len(runs) > 1:
        order = {name: i for i, name in enumerate(_variant_order(folder))}
        summaries.sort(key=lambda s: order.get(s["variant"], len(order)))
        write_comparison(folder, summaries[0]["scenario"], summaries)
    console.print(summary_table(summaries))
    for other in summaries[1:]:
        console.print(verdict(summaries[0], other))
    for report in reports:
        state = "complete" if report.summary["complete"] else "PARTIAL (the run did not finish)"
        console.print(f"{report.folder}: {state}; plot {report.folder / 'plot.png'}")
    return 0 if all(e.passed for r in reports for e in r.expectations) else 1


def _variant_order(folder) -> list[str]:
    import json
    try:
        return json.loads((folder / "summary.json").read_text())["variants"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def cmd_scenarios(args: argparse.Namespace) -> int:
    from harness.scenario.model import load_scenario, shipped_scenarios
    for name, path in shipped_scenarios().items():
        console.print(f"{name:<20} {load_scenario(path).description}\n{'':<20} {path}", highlight=False,
                      soft_wrap=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.scenario = "demo-overcommit"
    args.variants = None
    return cmd_compare(args)


def cmd_trend(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.trend import Flag, TrendSettings, build_trends, load
    from harness.trend_report import markdown, rich_tables
    settings = TrendSettings(window=args.window, min_history=args.min_history, k=args.k)
    trends = build_trends(load([Path(p) for p in args.paths]), settings)
    if args.format == "markdown":
        print(markdown(trends, settings))
    else:
        for item in rich_tables(trends, settings):
            console.print(item)
    regressed = any(t.flagged(Flag.REGRESSION) for t in trends)
    return 1 if regressed and args.fail_on_regression else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balloon-harness",
                                     description="Boot real QEMU guests, put them under memory "
                                                 "overcommit, and prove what happens.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="what is installed, what is missing, and how to fix it") \
        .set_defaults(func=cmd_doctor)

    image = sub.add_parser("image", help="the guest image").add_subparsers(dest="image_command", required=True)
    build = image.add_parser("build", help="build the default guest image (cached by recipe hash)")
    from harness.image.recipe import DEFAULT_RECIPE
    build.add_argument("--recipe", default=DEFAULT_RECIPE)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_image_build)

    boot = sub.add_parser("boot", help="boot one VM, print how to SSH in, stop on Ctrl-C")
    _options_args(boot)
    boot.add_argument("--name", default="vm")
    boot.set_defaults(func=cmd_boot)

    bench = sub.add_parser("bench", help="boot (and restore) timings on this machine")
    _options_args(bench)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--no-naive", action="store_true", help="skip the naive image (saves its build)")
    bench.add_argument("--no-daemon", action="store_true", help="skip the daemon benchmark in a guest")
    bench.add_argument("--no-libvirt", action="store_true", help="skip the libvirt boot figures")
    bench.set_defaults(func=cmd_bench)

    for name, func, text in (("run", cmd_run, "run a scenario once"),
                             ("compare", cmd_compare, "run a scenario once per variant (default: the Intermediate "
                                                      "module off, then on) and print one table")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("scenario", help="a scenario .toml file or a shipped scenario's name")
        _options_args(cmd)
        cmd.add_argument("--runs", default="runs", help="where run folders go (default ./runs)")
        if name == "run":
            cmd.add_argument("--intermediate", choices=["on", "off", "scenario"], default="scenario",
                             help="override the scenario's [intermediate] enabled")
            cmd.add_argument("--variant", default=None, help="run it as one variant, e.g. mom+intermediate")
        else:
            cmd.add_argument("--variants", default=None,
                             help="comma-separated, e.g. schedule,mom,mom+intermediate (default: the "
                                  "scenario's [compare] variants, else off,on)")
        cmd.set_defaults(func=func)

    report = sub.add_parser("report", help="rebuild the table, summary and plot of a run folder, complete or not")
    report.add_argument("run_dir", help="a run folder (or a compare folder)")
    report.set_defaults(func=cmd_report)

    sub.add_parser("scenarios", help="list the shipped scenarios").set_defaults(func=cmd_scenarios)

    demo = sub.add_parser("demo", help="the main job end to end: compare the default scenario")
    _options_args(demo)
    demo.add_argument("--runs", default="runs")
    demo.set_defaults(func=cmd_demo)

    from harness.reaper import KEEP_DAYS
    trend = sub.add_parser("trend", help="each figure's history over runs of a scenario; flags what left its noise band")
    trend.add_argument("paths", nargs="+", metavar="SUMMARY.json|RUN_DIR",
                       help="summaries or folders holding them, oldest first (folders: sorted by path)")
    trend.add_argument("--window", type=int, default=10, help="earlier runs the median and band come from (default 10)")
    trend.add_argument("--min-history", type=int, default=5, help="earlier runs needed to flag (default 5, at least 3)")
    trend.add_argument("-k", type=float, default=3.0, help="band half-width in robust standard deviations (default 3)")
    trend.add_argument("--format", choices=["text", "markdown"], default="text",
                       help="markdown: a table for a CI job summary ($GITHUB_STEP_SUMMARY)")
    trend.add_argument("--fail-on-regression", action="store_true", help="exit 1 if a regression is flagged")
    trend.set_defaults(func=cmd_trend)

    reap = sub.add_parser("reap", help="stop what killed runs left (QEMU, domains, disks, sockets); keep their evidence")
    reap.add_argument("--libvirt-uri", default=None)
    reap.add_argument("--no-libvirt", action="store_true", help="do not look at libvirt domains")
    reap.add_argument("--purge", action="store_true", help="remove killed runs' evidence folders too")
    reap.add_argument("--keep-days", type=float, default=KEEP_DAYS,
                      help=f"remove evidence marked killed longer ago than this (default {KEEP_DAYS:g})")
    reap.set_defaults(func=cmd_reap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HarnessError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)  # paths stay whole
        return 2


if __name__ == "__main__":
    sys.exit(main())

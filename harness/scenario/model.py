"""A scenario file, parsed and validated. Every mistake names the file, the key and what is
expected, e.g. `demo.toml: workloads[1].args.size_mib: expected an integer, got 'big'`, and
a file with several mistakes reports all of them in one message.

Names become folder names, systemd unit names, hostnames and command-line arguments, so
they are restricted: a scenario or workload name is letters, digits, '-' and '_', starting
with a letter or digit (workloads at most 15 characters: the process name the daemon
sees); a VM name is a hostname (lowercase letters, digits and '-', at most 31, not "host").
Numbers must be finite: nan and inf are refused everywhere.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from harness.config import Backend, BalloonDevice, SwapSpec
from harness.errors import ConfigError
from harness.guest.intermediate.config import FreezeMethod
from harness.host.budget import HostSwapSpec
from harness.policy.mom import MomRules
from harness.scenario.spec import (
    DEFAULT_BALLOON_MIN_MIB,
    BalloonStep,
    Expectations,
    GuestSection,
    HostSection,
    IntermediateSection,
    PolicyKind,
    PolicySection,
    Scenario,
    VmSection,
)
from harness.workloads import ALLOWED_ARGS, Role, WorkloadKind, WorkloadSpec

__all__ = ["Scenario", "ScenarioError", "VmSection", "GuestSection", "BalloonStep", "IntermediateSection",
           "Expectations", "load_scenario", "parse_scenario", "find_scenario", "shipped_scenarios"]

SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
WORKLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")
VM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
#: Ledger rows of host-wide figures use this name.
RESERVED_VM_NAMES = {"host"}
#: The balloon controller's floor (harness.balloon.DEFAULT_FLOOR_MIB).
MIN_TARGET_MIB = 192

DEFAULT_FIX = ("correct the scenario file (the shipped scenarios are examples: "
               "`balloon-harness scenarios` prints where they are).")


class ScenarioError(ConfigError):
    """A scenario file that cannot be run as written."""


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[tuple[str, str | None]] = []

    def add(self, message: str, fix: str | None = None) -> None:
        self.items.append((f"{self.where}: {message}", fix))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            message, fix = self.items[0]
            raise ScenarioError(message, fix=fix or DEFAULT_FIX)
        lines = "\n".join(f"  {m}" for m, _ in self.items)
        fixes = sorted({f for _, f in self.items if f})
        raise ScenarioError(f"{self.where}: {len(self.items)} mistakes:\n{lines}\n",
                            fix=" ".join(fixes) if len(fixes) == 1 else DEFAULT_FIX)


class _Missing:
    pass


MISSING = _Missing()


class _Reader:
    """Typed access to one TOML table. A mistake is recorded (with the full key path) and
    the reader carries on with the default, so that every mistake is reported at once."""

    def __init__(self, problems: _Problems, data: Any, path: str = "") -> None:
        self.problems = problems
        self.data = data if isinstance(data, dict) else {}
        self.path = path

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, got: Any = MISSING, fix: str | None = None) -> None:
        shown = "" if got is MISSING else f", got {got!r}"
        self.problems.add(f"{self.key(key)}: expected {expected}{shown}.", fix)

    def has(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str, required: bool = False) -> _Reader:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, "a table ([" + self.key(key) + "])")
            return _Reader(self.problems, {}, self.key(key))
        if not isinstance(value, dict):
            self.fail(key, "a table", value)
            value = {}
        return _Reader(self.problems, value, self.key(key))

    def tables(self, key: str) -> list[_Reader]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"an array of tables ([[{key}]])", value)
            return []
        return [_Reader(self.problems, v, f"{self.key(key)}[{i}]") for i, v in enumerate(value)]

    def get(self, key: str, kind: type, default: Any = MISSING, *, minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
        fallback = None if default is MISSING else default
        if key not in self.data:
            if default is MISSING:
                self.fail(key, f"a value ({_name(kind)}), but the key is missing")
            return fallback
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind in (int, float) and isinstance(value, bool)) or not isinstance(value, kind):
            self.fail(key, _name(kind), value)
            return fallback
        if kind is float and not math.isfinite(value):
            self.fail(key, "a finite number (nan and inf are not allowed)", value)
            return fallback
        if minimum is not None and value < minimum:
            self.fail(key, f"a number >= {minimum:g}", value)
            return fallback
        if maximum is not None and value > maximum:
            self.fail(key, f"a number <= {maximum:g}", value)
            return fallback
        if choices is not None and value not in choices:
            self.fail(key, "one of " + ", ".join(choices), value)
            return fallback
        return value

    def name(self, key: str, pattern: re.Pattern[str], rule: str, default: Any = MISSING) -> str | None:
        value = self.get(key, str, default)
        if value is None or value is default:
            return value
        if not pattern.fullmatch(value):
            self.fail(key, f"a safe name ({rule})", value,
                      fix="rename it: names become folder, unit and host names.")
            return None
        return value

    def unknown_keys(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                self.fail(key, "no such key (known: " + ", ".join(sorted(known)) + ")",
                          fix="remove or rename it; a typo here would otherwise be ignored silently.")


def _name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, kind.__name__)


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"Cannot read scenario file {path}: {exc.strerror}.",
                            fix="give the path of a .toml scenario, or a shipped scenario's name "
                                "(balloon-harness scenarios).") from None
    return parse_scenario(text, path.name, source=path)


TOP_KEYS = {"scenario", "vm", "workloads", "balloon", "intermediate", "expect", "host", "policy", "compare"}
INTERMEDIATE_KEYS = {"enabled", "stop_above", "resume_below", "hold_s", "method", "max_stopped_s",
                     "resume_headroom", "resume_reserve_mib", "page_out", "min_rss_mib"}
VM_KEYS = {"name", "memory_mib", "cpus", "swap", "backend", "free_page_reporting", "deflate_on_oom",
           "stats_period_s", "balloon_start_mib", "balloon_min_mib", "intermediate"}


def parse_scenario(text: str, where: str = "<scenario>", source: Path | None = None) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}.", fix="fix the syntax at that line.") from None
    problems = _Problems(where)
    root = _Reader(problems, data)
    root.unknown_keys(TOP_KEYS)

    meta = root.table("scenario", required=True)
    meta.unknown_keys({"name", "description", "time_limit_s"})
    name = meta.name("name", SCENARIO_NAME, "letters, digits, '-' and '_', starting with a letter or "
                                            "digit, at most 64 characters")
    default_im = _intermediate(root.table("intermediate"), IntermediateSection())

    guests = _guests(root, default_im)
    by_name = {g.name: g for g in guests}
    workloads: dict[str, list[WorkloadSpec]] = {g.name: [] for g in guests}
    steps: dict[str, list[BalloonStep]] = {g.name: [] for g in guests}
    seen_workloads: set[str] = set()
    for w in root.tables("workloads"):
        vm = _owner(w, by_name)
        spec = _workload(w, seen_workloads)
        if spec is not None and vm is not None:
            workloads[vm].append(spec)
    if not root.data.get("workloads"):
        root.fail("workloads", "at least one [[workloads]] table")
    for b in root.tables("balloon"):
        vm = _owner(b, by_name)
        step = _step(b, by_name.get(vm) if vm else None)
        if step is not None and vm is not None:
            steps[vm].append(step)
    for vm, vm_steps in steps.items():
        if [s.at_s for s in vm_steps] != sorted(s.at_s for s in vm_steps):
            root.fail("balloon", f"the steps of guest {vm!r} in increasing at_s order")

    host = _host(root.table("host"))
    policy = _policy(root.table("policy"))
    expect = _expect(root.table("expect"))
    compare = root.table("compare")
    compare.unknown_keys({"variants"})
    variants = _variants(compare)
    time_limit = meta.get("time_limit_s", float, 600.0, minimum=10)
    description = meta.get("description", str, "")
    problems.raise_if_any()

    guests = tuple(replace(g, workloads=tuple(workloads[g.name]), balloon=tuple(steps[g.name])) for g in guests)
    return Scenario(name=name, description=description, time_limit_s=time_limit, guests=guests,
                    expect=expect, host=host, policy=policy, variants=variants, source=source, text=text)


def _guests(root: _Reader, default_im: IntermediateSection) -> list[GuestSection]:
    raw = root.data.get("vm", {})
    if isinstance(raw, dict):
        readers = [root.table("vm")]
    elif isinstance(raw, list) and raw and all(isinstance(v, dict) for v in raw):
        readers = root.tables("vm")
    else:
        root.fail("vm", "a [vm] table or [[vm]] tables", raw)
        readers = [_Reader(root.problems, {}, "vm")]
    guests: list[GuestSection] = []
    for r in readers:
        guest = _guest(r, default_im, several=len(readers) > 1)
        if guest.name in {g.name for g in guests}:
            r.fail("name", "a name not used by another [[vm]]", guest.name)
        guests.append(guest)
    return guests


def _guest(vm: _Reader, default_im: IntermediateSection, several: bool) -> GuestSection:
    vm.unknown_keys(VM_KEYS)
    d = GuestSection()
    rule = "lowercase letters, digits and '-', starting with a letter or digit, at most 31 characters"
    name = vm.name("name", VM_NAME, rule, MISSING if several else d.name) or d.name
    if name in RESERVED_VM_NAMES:
        vm.fail("name", f"a name other than {name!r} (reserved for host-wide figures)", name)
    swap_text = vm.get("swap", str, str(d.swap))
    try:
        swap = SwapSpec.parse(swap_text)
    except ConfigError:
        vm.fail("swap", '"none", "file:MIB" or "zram:MIB"', swap_text)
        swap = d.swap
    backend = vm.get("backend", str, None, choices=("qemu", "libvirt"))
    memory = vm.get("memory_mib", int, d.memory_mib, minimum=256, maximum=1 << 20)
    start = vm.get("balloon_start_mib", float, None, minimum=MIN_TARGET_MIB, maximum=memory)
    floor = vm.get("balloon_min_mib", float, float(min(DEFAULT_BALLOON_MIN_MIB, memory)),
                   minimum=MIN_TARGET_MIB, maximum=memory)
    im_reader = vm.table("intermediate")
    return GuestSection(
        name=name, memory_mib=memory, cpus=vm.get("cpus", int, d.cpus, minimum=1, maximum=64), swap=swap,
        backend=Backend(backend) if backend else None,
        balloon_device=BalloonDevice(free_page_reporting=vm.get("free_page_reporting", bool, False),
                                     deflate_on_oom=vm.get("deflate_on_oom", bool, False)),
        stats_period_s=vm.get("stats_period_s", int, d.stats_period_s, minimum=1, maximum=3600),
        balloon_start_mib=start, balloon_min_mib=floor,
        intermediate=_intermediate(im_reader, default_im),
        intermediate_opt_out=im_reader.data.get("enabled") is False)


def _intermediate(im: _Reader, d: IntermediateSection) -> IntermediateSection:
    im.unknown_keys(INTERMEDIATE_KEYS)
    section = IntermediateSection(
        enabled=im.get("enabled", bool, d.enabled),
        stop_above=im.get("stop_above", float, d.stop_above, minimum=0, maximum=100),
        resume_below=im.get("resume_below", float, d.resume_below, minimum=0, maximum=100),
        hold_s=im.get("hold_s", float, d.hold_s, minimum=0),
        method=im.get("method", str, d.method, choices=tuple(m.value for m in FreezeMethod)),
        max_stopped_s=im.get("max_stopped_s", float, d.max_stopped_s, minimum=0),
        resume_headroom=im.get("resume_headroom", float, d.resume_headroom, minimum=0),
        resume_reserve_mib=im.get("resume_reserve_mib", float, d.resume_reserve_mib, minimum=0),
        page_out=im.get("page_out", bool, d.page_out),
        min_rss_mib=im.get("min_rss_mib", float, d.min_rss_mib, minimum=0))
    if section.resume_below > section.stop_above:
        im.fail("resume_below", f"at most stop_above ({section.stop_above:g})", section.resume_below)
    return section


def _owner(r: _Reader, guests: dict[str, GuestSection]) -> str | None:
    """The guest a workload or balloon step belongs to: its `vm` key, required when the
    scenario has several guests."""
    if len(guests) == 1 and not r.has("vm"):
        return next(iter(guests))
    vm = r.get("vm", str)
    if vm is not None and vm not in guests:
        r.fail("vm", "the name of a [[vm]] (" + ", ".join(guests) + ")", vm)
        return None
    return vm


def _workload(w: _Reader, seen: set[str]) -> WorkloadSpec | None:
    w.unknown_keys({"name", "kind", "role", "start_at_s", "args", "vm"})
    name = w.name("name", WORKLOAD_NAME, "letters, digits, '-' and '_', starting with a letter or digit, "
                                         "at most 15 characters")
    if name is not None and name in seen:
        w.fail("name", "a name not used by another workload", name)
    if name is not None:
        seen.add(name)
    kind_text = w.get("kind", str, choices=tuple(k.value for k in WorkloadKind))
    role_text = w.get("role", str, choices=tuple(r.value for r in Role))
    start = w.get("start_at_s", float, 0.0, minimum=0)
    args_reader = w.table("args")
    if kind_text is None:
        return None
    kind = WorkloadKind(kind_text)
    allowed = ALLOWED_ARGS[kind]
    args_reader.unknown_keys(set(allowed))
    args = {}
    for key, typ in allowed.items():
        if key in args_reader.data:
            value = args_reader.get(key, typ, minimum=0 if typ in (int, float) else None)
            if value is not None:
                args[key] = value
    if name is None or role_text is None:
        return None
    return WorkloadSpec(name, kind, Role(role_text), args, start)


def _step(b: _Reader, guest: GuestSection | None) -> BalloonStep | None:
    b.unknown_keys({"at_s", "target_mib", "ramp_s", "vm"})
    target = b.get("target_mib", float, minimum=MIN_TARGET_MIB)
    at = b.get("at_s", float, minimum=0)
    ramp = b.get("ramp_s", float, 0.0, minimum=0)
    if guest is not None and target is not None and target > guest.memory_mib:
        b.fail("target_mib", f"at most the guest's memory_mib ({guest.memory_mib})", target)
        return None
    if target is None or at is None or ramp is None:
        return None
    return BalloonStep(at, target, ramp)


def _host(h: _Reader) -> HostSection:
    h.unknown_keys({"memory_budget_mib", "host_swap"})
    budget = h.get("memory_budget_mib", int, None, minimum=256)
    swap_text = h.get("host_swap", str, "none")
    try:
        swap = HostSwapSpec.parse(swap_text)
    except ConfigError:
        h.fail("host_swap", '"none" or "file:MIB"', swap_text)
        swap = HostSwapSpec()
    if swap.size_mib and budget is None:
        h.fail("host_swap", "a memory_budget_mib as well (host swap is used by the budget's guests)", swap_text)
    return HostSection(memory_budget_mib=budget, host_swap=swap)


def _policy(p: _Reader) -> PolicySection:
    d = PolicySection()
    p.unknown_keys({"kind", "interval_s", *(f.name for f in fields(MomRules))})
    kind = p.get("kind", str, d.kind.value, choices=tuple(k.value for k in PolicyKind))
    share = {"minimum": 0.0, "maximum": 1.0}
    rules = MomRules(**{f.name: p.get(f.name, int, f.default, minimum=1, maximum=1000) if f.type == "int"
                        else p.get(f.name, float, f.default, **share) for f in fields(MomRules)})
    if rules.pressure_critical > rules.pressure_threshold:
        p.fail("pressure_critical", f"at most pressure_threshold ({rules.pressure_threshold:g})",
               rules.pressure_critical)
    return PolicySection(kind=PolicyKind(kind or d.kind.value),
                         interval_s=p.get("interval_s", float, d.interval_s, minimum=0.1), mom=rules)


def _expect(ex: _Reader) -> Expectations:
    ex.unknown_keys({"protected_completes", "no_oom_kill", "nothing_left_stopped", "balloon_reaches_targets",
                     "max_psi_full_stall_s", "protected_never_stopped", "host_budget_held", "no_host_oom_kill"})
    return Expectations(
        protected_completes=ex.get("protected_completes", bool, None),
        no_oom_kill=ex.get("no_oom_kill", bool, None),
        nothing_left_stopped=ex.get("nothing_left_stopped", bool, None),
        balloon_reaches_targets=ex.get("balloon_reaches_targets", bool, None),
        max_psi_full_stall_s=ex.get("max_psi_full_stall_s", float, None, minimum=0),
        protected_never_stopped=ex.get("protected_never_stopped", bool, None),
        host_budget_held=ex.get("host_budget_held", bool, None),
        no_host_oom_kill=ex.get("no_host_oom_kill", bool, None))


def _variants(compare: _Reader) -> tuple[str, ...]:
    from harness.scenario.variants import parse_variant
    raw = compare.data.get("variants", [])
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        compare.fail("variants", "a list of variant names", raw)
        return ()
    for text in raw:
        try:
            parse_variant(text)
        except ConfigError as exc:
            compare.fail("variants", exc.fix or "a known variant", text)
    return tuple(raw)


def shipped_scenarios() -> dict[str, Path]:
    folder = Path(__file__).resolve().parent.parent / "scenarios"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def find_scenario(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = shipped_scenarios()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ScenarioError(f"No scenario file or shipped scenario named {name_or_path!r}.",
                        fix="give a .toml path, or one of: " + ", ".join(shipped) + ".")

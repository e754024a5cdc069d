"""A scenario file, parsed and validated. Every error names the file, the key and what is
expected, e.g. `demo.toml: workloads[1].args.size_mib: expected an integer, got "big"`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Backend, SwapSpec
from harness.errors import ConfigError
from harness.guest.intermediate.config import FreezeMethod
from harness.intermediate import IntermediateOptions
from harness.workloads import ALLOWED_ARGS, Role, WorkloadKind, WorkloadSpec


class ScenarioError(ConfigError):
    """A scenario file that cannot be run as written."""


@dataclass(frozen=True)
class VmSection:
    memory_mib: int = 1024
    cpus: int = 2
    swap: SwapSpec = field(default_factory=lambda: SwapSpec.parse("file:1024"))
    backend: Backend | None = None  # None: whatever the command line says


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


@dataclass(frozen=True)
class Expectations:
    protected_completes: bool | None = None
    no_oom_kill: bool | None = None
    nothing_left_stopped: bool | None = None
    balloon_reaches_targets: bool | None = None
    max_psi_full_stall_s: float | None = None
    #: The Intermediate daemon never stops a protected workload (vacuous when it is off).
    protected_never_stopped: bool | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    time_limit_s: float
    vm: VmSection
    workloads: tuple[WorkloadSpec, ...]
    balloon: tuple[BalloonStep, ...]
    intermediate: IntermediateSection
    expect: Expectations
    source: Path | None = None
    text: str = ""

    @property
    def protected(self) -> tuple[WorkloadSpec, ...]:
        return tuple(w for w in self.workloads if w.role is Role.PROTECTED)


class _Reader:
    """Typed access to a TOML table that reports the full key path on any mistake."""

    def __init__(self, where: str, data: Any, path: str = "") -> None:
        self.where = where
        self.data = data
        self.path = path

    def fail(self, key: str, expected: str, got: Any = None, fix: str | None = None) -> ScenarioError:
        full = f"{self.path}.{key}" if self.path else key
        shown = f", got {got!r}" if got is not None else ""
        return ScenarioError(f"{self.where}: {full}: expected {expected}{shown}.",
                             fix=fix or "correct the scenario file (see the shipped scenarios in harness/scenarios/).")

    def table(self, key: str, required: bool = False) -> _Reader:
        value = self.data.get(key, None if required else {})
        if value is None:
            raise self.fail(key, "a table")
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return _Reader(self.where, value, f"{self.path}.{key}" if self.path else key)

    def tables(self, key: str) -> list[_Reader]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"an array of tables ([[{key}]])", value)
        base = f"{self.path}.{key}" if self.path else key
        return [_Reader(self.where, v, f"{base}[{i}]") for i, v in enumerate(value)]

    def get(self, key: str, kind: type, default: Any = ..., *, minimum: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, f"a value ({_name(kind)}), but the key is missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind in (int, float) and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.fail(key, _name(kind), value)
        if minimum is not None and value < minimum:
            raise self.fail(key, f"a number >= {minimum}", value)
        if choices is not None and value not in choices:
            raise self.fail(key, "one of " + ", ".join(choices), value)
        return value

    def unknown_keys(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.fail(key, "no such key (known: " + ", ".join(sorted(known)) + ")",
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


def parse_scenario(text: str, where: str = "<scenario>", source: Path | None = None) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}.", fix="fix the syntax at that line.") from None
    root = _Reader(where, data)
    root.unknown_keys({"scenario", "vm", "workloads", "balloon", "intermediate", "expect"})

    meta = root.table("scenario", required=True)
    meta.unknown_keys({"name", "description", "time_limit_s"})
    vm = root.table("vm")
    vm.unknown_keys({"memory_mib", "cpus", "swap", "backend"})
    vm_defaults = VmSection()
    swap_text = vm.get("swap", str, str(vm_defaults.swap))
    try:
        swap = SwapSpec.parse(swap_text)
    except ConfigError:
        raise vm.fail("swap", '"none", "file:MIB" or "zram:MIB"', swap_text) from None
    backend = vm.get("backend", str, None, choices=("qemu", "libvirt"))
    vm_section = VmSection(memory_mib=vm.get("memory_mib", int, vm_defaults.memory_mib, minimum=256),
                           cpus=vm.get("cpus", int, vm_defaults.cpus, minimum=1), swap=swap,
                           backend=Backend(backend) if backend else None)

    workloads = []
    names: set[str] = set()
    for w in root.tables("workloads"):
        w.unknown_keys({"name", "kind", "role", "start_at_s", "args"})
        name = w.get("name", str)
        if not name.replace("-", "").isalnum() or len(name) > 15:
            raise w.fail("name", "letters, digits and '-', at most 15 characters", name)
        if name in names:
            raise w.fail("name", "a name not used by another workload", name)
        names.add(name)
        kind = WorkloadKind(w.get("kind", str, choices=tuple(k.value for k in WorkloadKind)))
        role = Role(w.get("role", str, choices=tuple(r.value for r in Role)))
        args_reader = w.table("args")
        allowed = ALLOWED_ARGS[kind]
        args_reader.unknown_keys(set(allowed))
        args = {key: args_reader.get(key, typ) for key, typ in allowed.items() if key in args_reader.data}
        workloads.append(WorkloadSpec(name, kind, role, args, w.get("start_at_s", float, 0.0, minimum=0)))
    if not workloads:
        raise root.fail("workloads", "at least one [[workloads]] table")

    steps = []
    for b in root.tables("balloon"):
        b.unknown_keys({"at_s", "target_mib", "ramp_s"})
        target = b.get("target_mib", float, minimum=128)
        if target > vm_section.memory_mib:
            raise b.fail("target_mib", f"at most vm.memory_mib ({vm_section.memory_mib})", target)
        steps.append(BalloonStep(b.get("at_s", float, minimum=0), target, b.get("ramp_s", float, 0.0, minimum=0)))
    if [s.at_s for s in steps] != sorted(s.at_s for s in steps):
        raise root.fail("balloon", "steps in increasing at_s order")

    im = root.table("intermediate")
    im.unknown_keys({"enabled", "stop_above", "resume_below", "hold_s", "method", "max_stopped_s",
                     "resume_headroom", "resume_reserve_mib", "page_out", "min_rss_mib"})
    d = IntermediateSection()
    intermediate = IntermediateSection(
        enabled=im.get("enabled", bool, d.enabled), stop_above=im.get("stop_above", float, d.stop_above, minimum=0),
        resume_below=im.get("resume_below", float, d.resume_below, minimum=0),
        hold_s=im.get("hold_s", float, d.hold_s, minimum=0),
        method=im.get("method", str, d.method, choices=tuple(m.value for m in FreezeMethod)),
        max_stopped_s=im.get("max_stopped_s", float, None, minimum=0),
        resume_headroom=im.get("resume_headroom", float, None, minimum=0),
        resume_reserve_mib=im.get("resume_reserve_mib", float, None, minimum=0),
        page_out=im.get("page_out", bool, None), min_rss_mib=im.get("min_rss_mib", float, None, minimum=0))
    if intermediate.resume_below > intermediate.stop_above:
        raise im.fail("resume_below", f"at most stop_above ({intermediate.stop_above})", intermediate.resume_below)

    ex = root.table("expect")
    ex.unknown_keys({"protected_completes", "no_oom_kill", "nothing_left_stopped", "balloon_reaches_targets",
                     "max_psi_full_stall_s", "protected_never_stopped"})
    expect = Expectations(
        protected_completes=ex.get("protected_completes", bool, None),
        no_oom_kill=ex.get("no_oom_kill", bool, None),
        nothing_left_stopped=ex.get("nothing_left_stopped", bool, None),
        balloon_reaches_targets=ex.get("balloon_reaches_targets", bool, None),
        max_psi_full_stall_s=ex.get("max_psi_full_stall_s", float, None, minimum=0),
        protected_never_stopped=ex.get("protected_never_stopped", bool, None))

    return Scenario(name=meta.get("name", str), description=meta.get("description", str, ""),
                    time_limit_s=meta.get("time_limit_s", float, 600.0, minimum=10),
                    vm=vm_section, workloads=tuple(workloads), balloon=tuple(steps),
                    intermediate=intermediate, expect=expect, source=source, text=text)


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

"""pytest plugin (registered through the `pytest11` entry point): the `vm` marker, the
--vm-* options and the fixtures.

Fixture layers, Firecracker-style:

    vm_session (session)   accelerator, image (built once, cached), SSH key
    vm_factory (function)  makes machines, owns their cleanup, saves artifacts on failure
    vm (function)          one ready machine for the common case
    shared_vm (session)    one ready machine shared by tests that only read from it
    balloon (function)     the `vm`'s balloon controller
    run_scenario (function) runs an overcommit scenario on this test's guests

Artifacts of a failed test (serial log, command line, QMP traffic, QEMU output, guest dmesg
and journal) land in <--vm-artifacts>/<test id>-<hash>/<vm>/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.balloon import BalloonController
from harness.config import Backend
from harness.errors import HarnessError
from harness.figures import key_figures
from harness.machine.base import Machine
from harness.machine.factory import MachineFactory
from harness.reaper import kill_pids, qemu_processes_under
from harness.runtime import peek_run
from harness.scenario.model import Scenario, find_scenario, load_scenario
from harness.scenario.runner import RunResult
from harness.scenario.runner import run_scenario as run_scenario_once
from harness.session import HarnessOptions, HarnessSession, artifacts_root, env_default

log = logging.getLogger(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("balloon-harness", "VMs under memory overcommit")
    defaults = HarnessOptions
    group.addoption("--vm-accel", choices=["auto", "kvm", "tcg"], default=env_default("ACCEL", defaults.accel),
                    help="accelerator: auto picks KVM only where it really works (default auto)")
    group.addoption("--vm-image", default=env_default("IMAGE", "") or None,
                    help="guest image: a recipe name (default debian-bookworm, built offline), "
                         "a local cloud image path, or URL#sha256=HEX")
    group.addoption("--vm-memory", type=int, default=int(env_default("MEMORY", str(defaults.memory_mib))),
                    help=f"guest memory in MiB (default {defaults.memory_mib})")
    group.addoption("--vm-cpus", type=int, default=int(env_default("CPUS", str(defaults.cpus))),
                    help=f"guest vCPUs (default {defaults.cpus})")
    group.addoption("--vm-swap", default=env_default("SWAP", defaults.swap),
                    help=f"guest swap: none, file:MIB or zram:MIB (default {defaults.swap})")
    group.addoption("--vm-backend", choices=["qemu", "libvirt"], default=env_default("BACKEND", defaults.backend),
                    help="qemu (embedded, default) or libvirt")
    group.addoption("--libvirt-uri", default=env_default("LIBVIRT_URI", "") or None,
                    help="libvirt URI (default qemu:///system as root, qemu:///session otherwise)")
    group.addoption("--vm-artifacts", default=None,
                    help="folder for VM evidence of failed tests (default ./artifacts)")
    group.addoption("--vm-keep", action="store_true",
                    help="keep the artifacts of passing tests too")
    group.addoption("--vm-fresh-boot", action="store_true",
                    help="boot every VM instead of restoring the session's saved state")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots real QEMU guests (select with -m vm, skip with -m 'not vm')")
    config.addinivalue_line("markers", "fresh_boot: this test's VMs boot instead of being restored")
    config.addinivalue_line("markers", "measure: takes figures (timings, throughput, stalls) that parallel guests "
                                       "on the same cores would change: run these alone, without xdist "
                                       "(-m measure after -m 'not measure' -n N)")


def options_from(config: pytest.Config) -> HarnessOptions:
    get = config.getoption
    return HarnessOptions(accel=get("--vm-accel"), image=get("--vm-image"),
                          memory_mib=get("--vm-memory"), cpus=get("--vm-cpus"),
                          swap=get("--vm-swap"), backend=get("--vm-backend"),
                          libvirt_uri=get("--libvirt-uri"), fresh_boot=get("--vm-fresh-boot"))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"bh_rep_{report.when}", report)


def _test_failed(node: pytest.Item) -> bool:
    return any(getattr(node, f"bh_rep_{when}", None) is not None
               and getattr(node, f"bh_rep_{when}").failed for when in ("setup", "call"))


def _artifact_dir(config: pytest.Config, nodeid: str) -> Path:
    """<artifacts>/<readable test id>-<hash of the exact id>: the readable part is cut and
    loses characters a folder name cannot have, the hash keeps every test's folder its own."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:120]
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:8]
    return artifacts_root(config.getoption("--vm-artifacts")) / f"{safe}-{digest}"


@pytest.fixture(scope="session")
def vm_session(request: pytest.FixtureRequest) -> HarnessSession:
    """Accelerator, image and key, resolved once (the image is built on first use)."""
    try:
        return HarnessSession.open(options_from(request.config))
    except HarnessError as exc:
        pytest.fail(f"balloon-harness cannot start VMs: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def vm_image(vm_session: HarnessSession):
    return vm_session.image


@pytest.fixture
def vm_backend(request: pytest.FixtureRequest) -> str:
    """The backend of this test's VMs (--vm-backend). A test module runs on both with
    `pytestmark = pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])`."""
    return request.config.getoption("--vm-backend")


@pytest.fixture
def vm_factory(request: pytest.FixtureRequest, vm_session: HarnessSession,
               vm_backend: str) -> Iterator[MachineFactory]:
    """Makes machines (`vm_factory.start(name=..., memory_mib=...)`); stops every one of them
    after the test, saving their evidence first if the test failed or --vm-keep is given."""
    fresh = request.node.get_closest_marker("fresh_boot") is not None or None
    factory = vm_session.factory(fresh_boot=fresh)
    factory.defaults = factory.defaults.with_(backend=Backend(vm_backend))
    try:
        yield factory
    finally:
        keep = request.config.getoption("--vm-keep") or _test_failed(request.node)
        factory.close(_artifact_dir(request.config, request.node.nodeid) if keep else None)
        # What the test waited for, in the JUnit report (`make slowest` reads it).
        request.node.user_properties.append(("vm_starts", json.dumps([s.__dict__ for s in factory.starts])))


@pytest.fixture
def vm(vm_factory: MachineFactory) -> Machine:
    """One ready guest with the session's defaults."""
    return vm_factory.start()


@pytest.fixture(scope="session")
def shared_vm(request: pytest.FixtureRequest, vm_session: HarnessSession) -> Iterator[Machine]:
    """One guest for the whole session, for tests that only look (do not change its state)."""
    factory = vm_session.factory()
    try:
        yield factory.start(name="shared")
    finally:
        failed = request.session.testsfailed > 0
        keep = request.config.getoption("--vm-keep") or failed
        factory.close(_artifact_dir(request.config, "session-shared_vm") if keep else None)


@pytest.fixture
def balloon(vm: Machine) -> BalloonController:
    """The `vm`'s balloon: validated targets, waits on `actual`, ramps."""
    return BalloonController(vm.balloon)


def record_scenario_figures(item: pytest.Item, summary: dict, run: str) -> None:
    """Attach a run's key figures to the test as user properties: pytest's --junitxml writes
    them as <property name="RUN.FIGURE" value=...> of the test case (also under xdist)."""
    for path, value in key_figures(summary).items():
        item.user_properties.append((f"{run}.{path}", str(value).lower() if isinstance(value, bool) else value))


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest, vm_factory: MachineFactory, tmp_path: Path):
    """Run a scenario (a shipped name, a .toml path or a Scenario) on guests of this test:
    `result = run_scenario("short-overcommit", intermediate=True)` or
    `run_scenario(path, variant="mom+intermediate")`; `result.passed` says whether its
    [expect] held. The run folder is `<pytest tmp_path>/runs/<scenario>-<n>/`
    (`result.folder`); it is copied to `<--vm-artifacts>/<test id>/runs/` when the test fails
    or --vm-keep is given. Each run's key figures become JUnit properties
    `SCENARIO.MODE.FIGURE` of the test."""
    folders: list[Path] = []
    labels: list[str] = []

    def run(scenario: str | Path | Scenario, *, intermediate: bool | None = None,
            variant: str | None = None) -> RunResult:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(find_scenario(str(scenario)))
        folder = tmp_path / "runs" / f"{scenario.name}-{len(folders) + 1}"
        folders.append(folder)
        result = run_scenario_once(scenario, vm_factory, folder, intermediate=intermediate, variant=variant)
        label = f"{scenario.name}.{result.mode}"
        labels.append(label)
        record_scenario_figures(request.node, result.summary,
                                label if labels.count(label) == 1 else f"{label}#{labels.count(label)}")
        return result

    yield run
    if folders and (request.config.getoption("--vm-keep") or _test_failed(request.node)):
        dest = _artifact_dir(request.config, request.node.nodeid) / "runs"
        for folder in folders:
            if folder.exists():
                shutil.copytree(folder, dest / folder.name, dirs_exist_ok=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Every fixture has torn down: any QEMU of this process still alive is a leak.
    run = peek_run()
    leaked = qemu_processes_under(run.path) if run else []
    if leaked:
        session.config.get_terminal_writer().line(
            f"balloon-harness: {len(leaked)} QEMU process(es) leaked by this run: {leaked}; killing",
            red=True)
        kill_pids(leaked)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""Errors a user can act on: each says what went wrong and the fix, in one paragraph."""

from __future__ import annotations

from collections.abc import Sequence


class HarnessError(Exception):
    """Base class. `fix` is the command or step that resolves it, shown after the message."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class MissingDependency(HarnessError):
    """A host program or library the harness needs is not installed."""


class AccelUnavailable(HarnessError):
    """The requested accelerator cannot run guests on this host."""


class ImageError(HarnessError):
    """The guest image cannot be built, downloaded, verified or read."""


class ConfigError(HarnessError):
    """A VM description, option or scenario file is invalid."""


class LaunchError(HarnessError):
    """QEMU (or libvirt) refused to start the guest. Carries the command line and output."""

    def __init__(self, message: str, *, command: Sequence[str] = (), output: str = "",
                 fix: str | None = None) -> None:
        self.command = list(command)
        self.output = output
        detail = message
        if output.strip():
            detail += f"\nQEMU said:\n{indent(output.strip())}"
        if self.command:
            detail += f"\nCommand line:\n{indent(' '.join(self.command))}"
        super().__init__(detail, fix=fix)


class WaitTimeout(HarnessError):
    """A deadline passed before a readiness signal. Says what was awaited and shows context."""

    def __init__(self, what: str, seconds: float, *, context: str = "",
                 fix: str | None = None) -> None:
        self.what = what
        self.seconds = seconds
        self.context = context
        detail = f"Timed out after {seconds:.1f} s waiting for {what}."
        if context.strip():
            detail += "\n" + context.rstrip()
        super().__init__(detail, fix=fix)


class GuestCommandError(HarnessError):
    """A command run in the guest exited non-zero where success was required."""

    def __init__(self, command: str, exit_status: int, stdout: str, stderr: str) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip())[-2000:]
        super().__init__(f"Guest command {command!r} exited with {exit_status}."
                         + (f"\n{indent(tail)}" if tail else ""))


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())

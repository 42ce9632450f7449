"""Running commands inside a node's network namespace (named for that: a netns by name).

Not to be confused with `testbed.nodes`, the Mininet node classes that configure a node's
addresses and routes while the network is built; this module only needs the namespace name,
so it also serves detached networks, devices and services long after Mininet is gone.

A node is a named network namespace (`<prefix>-<node>`, see `testbed.lifecycle`). `run`
executes a command to completion; `spawn` starts a service that is recorded in the run state
and dies with its controller (PR_SET_PDEATHSIG), so nothing outlives a crashed run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from testbed.errors import NetworkError
from testbed.lifecycle import RunRegistry

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec hook: the child gets SIGKILL when the controller that spawned it exits."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgrp()


class ManagedProcess:
    """A service process inside a node: stop() terminates it and forgets it in the run state."""

    def __init__(
        self,
        popen: subprocess.Popen,
        label: str,
        registry: RunRegistry | None,
        log_path: Path | None,
        log_handle: IO | None,
    ) -> None:
        self.popen = popen
        self.label = label
        self.registry = registry
        self.log_path = log_path
        self._log_handle = log_handle

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        if self.registry:
            self.registry.forget_process(self.popen.pid)
        return self.popen.returncode

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class NetnsNode:
    """A node of the emulated network, addressed by its named network namespace."""

    def __init__(self, name: str, netns: str, registry: RunRegistry | None = None) -> None:
        self.name = name
        self.netns = netns
        self.registry = registry

    def __repr__(self) -> str:
        return f"NetnsNode({self.name!r}, netns={self.netns!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run to completion; on failure with check=True raise NetworkError with stderr."""
        proc = subprocess.run(
            self.command(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=dict(env) if env is not None else None,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NetworkError(
                f"[{self.name}] '{shlex.join(argv)}' exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kwargs)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        label: str,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | IO | None = None,
    ) -> ManagedProcess:
        """Start a long-running process in this node; it dies with the controller."""
        handle = None
        if stdout is None:
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                handle = open(log, "ab")  # noqa: SIM115 - owned by ManagedProcess
                stdout = handle
            else:
                stdout = subprocess.DEVNULL
        popen = subprocess.Popen(
            self.command(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not subprocess.DEVNULL else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            preexec_fn=_die_with_parent,
        )
        if self.registry:
            self.registry.record_process(popen.pid, f"{self.name}:{label}", self.netns)
        return ManagedProcess(popen, label, self.registry, log, handle)

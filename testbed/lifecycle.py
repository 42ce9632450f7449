"""Run-unique naming and resource tracking, in the style of the kernel selftests' lib.sh.

Every namespace, process and temp dir a run creates is *recorded before it is created* in a
run state file (`STATE_DIR/<prefix>.json`). Teardown, and `cfrbench clean` after a crash or
kill -9, remove exactly the recorded resources and never anything matched by a pattern.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed import paths
from testbed.errors import RunStateError
from testbed.waiting import WaitTimeout, wait_until

PREFIX_BYTES = 2  # "cb" + 4 hex digits: short enough for interface names (IFNAMSIZ 15)


def _proc_starttime(pid: int) -> int | None:
    """Kernel start time of a live process (clock ticks since boot), None if it is gone.

    The start time tells a live pid from a reused one; a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses; fields after the last ')' are fixed.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class ProcessRecord:
    pid: int
    starttime: int
    label: str
    netns: str | None = None


@dataclass
class RunState:
    prefix: str
    kind: str
    created: float
    controller_pid: int
    controller_starttime: int
    netns: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    tmpdirs: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> RunState:
        procs = [ProcessRecord(**p) for p in data.get("processes", [])]
        return cls(
            prefix=data["prefix"],
            kind=data.get("kind", "?"),
            created=data.get("created", 0.0),
            controller_pid=data.get("controller_pid", 0),
            controller_starttime=data.get("controller_starttime", 0),
            netns=list(data.get("netns", [])),
            processes=procs,
            tmpdirs=list(data.get("tmpdirs", [])),
            info=dict(data.get("info", {})),
        )

    def controller_alive(self) -> bool:
        return _proc_starttime(self.controller_pid) == self.controller_starttime


def state_dir() -> Path:
    return paths.STATE_DIR


def state_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}.json"


def list_runs() -> list[RunState]:
    """All recorded runs on this machine, oldest first."""
    runs = []
    directory = state_dir()
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        try:
            runs.append(RunState.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(runs, key=lambda r: r.created)


def load_run(prefix: str) -> RunState:
    path = state_path(prefix)
    try:
        return RunState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RunStateError(f"no run with prefix {prefix!r} is recorded in {state_dir()}") from None
    except (ValueError, KeyError) as exc:
        raise RunStateError(f"run state file {path} is corrupt: {exc}") from None


def _existing_netns() -> set[str]:
    netns_dir = Path("/run/netns")
    return {p.name for p in netns_dir.iterdir()} if netns_dir.is_dir() else set()


def new_prefix() -> str:
    """A prefix no recorded run and no existing namespace uses."""
    taken = {r.prefix for r in list_runs()}
    existing = _existing_netns()
    for _ in range(100):
        prefix = "cb" + secrets.token_hex(PREFIX_BYTES)
        if prefix not in taken and not any(n.startswith(prefix + "-") for n in existing):
            return prefix
    raise RunStateError("could not find a free run prefix after 100 tries")


class RunRegistry:
    """Records what one run creates, persists it atomically, and tears it down in reverse.

    Deferred actions (`defer`) run in LIFO order at teardown, like lib.sh's `defer`.
    """

    def __init__(self, kind: str, prefix: str | None = None, info: dict | None = None) -> None:
        me = os.getpid()
        self.state = RunState(
            prefix=prefix or new_prefix(),
            kind=kind,
            created=time.time(),
            controller_pid=me,
            controller_starttime=_proc_starttime(me) or 0,
            info=dict(info or {}),
        )
        self._deferred: list[Callable[[], None]] = []
        self._closed = False
        self.save()

    @property
    def prefix(self) -> str:
        return self.state.prefix

    def name(self, suffix: str) -> str:
        """A run-unique name: `<prefix>-<suffix>`."""
        return f"{self.prefix}-{suffix}"

    def save(self) -> None:
        directory = state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self.state)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, state_path(self.prefix))

    def adopt_controller(self) -> None:
        """Make the current process the run's controller (after a daemonizing fork)."""
        me = os.getpid()
        self.state.controller_pid = me
        self.state.controller_starttime = _proc_starttime(me) or 0
        self.save()

    def record_netns(self, netns: str) -> None:
        if netns not in self.state.netns:
            self.state.netns.append(netns)
            self.save()

    def record_process(self, pid: int, label: str, netns: str | None = None) -> None:
        start = _proc_starttime(pid)
        if start is None:
            return
        self.state.processes.append(ProcessRecord(pid, start, label, netns))
        self.save()

    def forget_process(self, pid: int) -> None:
        self.state.processes = [p for p in self.state.processes if p.pid != pid]
        self.save()

    def release_netns(self, names: list[str]) -> list[str]:
        """Delete namespaces (and the processes in them) now and drop them from the record:
        for a part of the run (one network) that ends before the run does."""
        problems: list[str] = []
        gone = set(names)
        for name in reversed(names):
            problems += delete_netns(name)
        self.state.netns = [n for n in self.state.netns if n not in gone]
        self.state.processes = [p for p in self.state.processes if p.netns not in gone]
        self.save()
        return problems

    def release_tmpdir(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self.state.tmpdirs = [t for t in self.state.tmpdirs if t != str(path)]
        self.save()

    def make_tmpdir(self, label: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-{label}-"))
        self.state.tmpdirs.append(str(path))
        self.save()
        return path

    def set_info(self, **kwargs: object) -> None:
        self.state.info.update(kwargs)
        self.save()

    def defer(self, action: Callable[[], None]) -> None:
        self._deferred.append(action)

    def close(self) -> list[str]:
        """Run deferred actions (LIFO), then remove every recorded resource. Returns problems."""
        if self._closed:
            return []
        self._closed = True
        problems: list[str] = []
        while self._deferred:
            action = self._deferred.pop()
            try:
                action()
            except Exception as exc:  # teardown must go on whatever one step does
                problems.append(f"deferred teardown step failed: {exc}")
        problems += remove_run_resources(self.state)
        return problems

    def __enter__(self) -> RunRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_pid(pid: int, starttime: int | None, sig: int = signal.SIGKILL) -> bool:
    """Kill a process only if it is still the one recorded (same start time)."""
    if starttime is not None and _proc_starttime(pid) != starttime:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
        return True
    return False


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(x) for x in out.stdout.split() if x.isdigit()]


def delete_netns(netns: str) -> list[str]:
    """Kill every process inside a namespace, then delete it. Absent namespaces are fine."""
    if netns not in _existing_netns():
        return []

    def emptied() -> bool:
        """Kill what is left inside; true once nothing is (killed processes take a moment)."""
        pids = netns_pids(netns)
        for pid in pids:
            _kill_pid(pid, None)
        return not pids

    # Up to a second; then `ip netns del` anyway: the namespace goes when its last process does.
    with contextlib.suppress(WaitTimeout):
        wait_until(emptied, 1.0, 0.02, f"the processes in namespace {netns} to exit")
    out = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True)
    if out.returncode != 0 and netns in _existing_netns():
        return [f"could not delete namespace {netns}: {out.stderr.strip()}"]
    return []


def remove_run_resources(state: RunState) -> list[str]:
    """Remove exactly what `state` records: processes, namespaces, temp dirs, the state file."""
    problems: list[str] = []
    me = os.getpid()
    for proc in reversed(state.processes):
        if proc.pid != me:
            _kill_pid(proc.pid, proc.starttime)
    for netns in reversed(state.netns):
        problems += delete_netns(netns)
    for tmp in state.tmpdirs:
        shutil.rmtree(tmp, ignore_errors=True)
    for suffix in (".log", ".ready", ".json"):  # the detached controller's log, then the state
        with contextlib.suppress(FileNotFoundError):
            (state_dir() / f"{state.prefix}{suffix}").unlink()
    return problems


def clean(prefixes: list[str] | None = None, *,
          include_live: bool = False) -> list[tuple[str, str]]:
    """Remove recorded runs; by default only those whose controller is gone (crash, kill).

    Returns (prefix, outcome) pairs for reporting.
    """
    report: list[tuple[str, str]] = []
    runs = list_runs()
    if prefixes:
        known = {r.prefix for r in runs}
        for p in prefixes:
            if p not in known:
                report.append((p, "not recorded (nothing removed)"))
        runs = [r for r in runs if r.prefix in prefixes]
    for run in runs:
        if run.controller_alive() and not include_live:
            report.append((run.prefix, f"controller pid {run.controller_pid} still running; "
                                       "use 'cfrbench down' or 'clean --all'"))
            continue
        if run.controller_alive():
            _kill_pid(run.controller_pid, run.controller_starttime, signal.SIGTERM)
            # Five seconds for its own teardown, then SIGKILL and remove what it recorded.
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda run=run: not run.controller_alive(), 5.0, 0.1,
                           f"run {run.prefix}'s controller to stop on SIGTERM")
            _kill_pid(run.controller_pid, run.controller_starttime)
            if not state_path(run.prefix).exists():
                report.append((run.prefix, "stopped by its controller"))
                continue
        problems = remove_run_resources(run)
        outcome = "removed " + ", ".join(
            f"{n} {w}" for n, w in (
                (len(run.netns), "namespaces"),
                (len(run.processes), "processes"),
                (len(run.tmpdirs), "temp dirs"),
            )
        )
        report.append((run.prefix, outcome + ("; " + "; ".join(problems) if problems else "")))
    return report


@contextlib.contextmanager
def run_registry(kind: str, info: dict | None = None) -> Iterator[RunRegistry]:
    registry = RunRegistry(kind, info=info)
    try:
        yield registry
    finally:
        registry.close()

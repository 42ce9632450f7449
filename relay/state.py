"""The relay's local state directory: secret key, epoch offset, mapping log, status, lock.

Everything the relay keeps about subscribers stays here (never upstream). The directory is
created mode 0700 and the key 0600. A file lock serialises kernel updates between `cfr run`,
`cfr rotate` and `cfr apply`, so two writers never interleave transactions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from relay.errors import RelayError

KEY_BYTES = 32


def netns_record_path() -> Path:
    """Where `cfr apply` notes which config it applied *in this network namespace*, so
    `cfr status` / `rotate` / `lookup` work without arguments. Keyed by the namespace's
    inode: unique among live namespaces, so relays in several namespaces never mix."""
    ino = os.stat("/proc/self/ns/net").st_ino
    return Path(os.environ.get("CFR_RUN_DIR", "/run/cfr")) / f"netns-{ino}.json"


def remember_applied(config: str, state_dir: Path, table: str) -> None:
    """Best effort (a read-only /run must not break apply)."""
    try:
        path = netns_record_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"config": str(Path(config).resolve()),
                                   "state_dir": str(state_dir), "table": table}) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def forget_applied(table: str) -> None:
    """After teardown: the namespace no longer runs that relay."""
    rec = recall_applied()
    if rec.get("table", table) == table:
        with contextlib.suppress(OSError):
            netns_record_path().unlink()


def recall_applied() -> dict:
    try:
        return json.loads(netns_record_path().read_text())
    except (OSError, ValueError):
        return {}


class StateDir:
    def __init__(self, path: str | Path, key_file: Path | None = None) -> None:
        self.path = Path(path)
        self.key_file = key_file if key_file is not None else self.path / "epoch.key"

    # paths
    @property
    def mapping_log(self) -> Path:
        return self.path / "mappings.jsonl"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def epoch_file(self) -> Path:
        return self.path / "epoch.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "cfr.pid"

    @property
    def applied_file(self) -> Path:
        return self.path / "applied.json"

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise RelayError(f"cannot create state dir {self.path}: {e.strerror}") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock around read-modify-apply sequences."""
        self.ensure()
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def key(self, create: bool = True) -> bytes:
        """The secret epoch key; created (random, 0600) on first use so restarts keep it."""
        try:
            data = self.key_file.read_bytes()
        except FileNotFoundError:
            if not create:
                raise RelayError(f"no epoch key at {self.key_file}") from None
            self.ensure()
            data = secrets.token_bytes(KEY_BYTES)
            tmp = self.key_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, self.key_file)  # never overwrite a key another process created
            except FileExistsError:
                data = self.key_file.read_bytes()
            finally:
                tmp.unlink(missing_ok=True)
        if len(data) < 16:
            raise RelayError(f"epoch key {self.key_file} is shorter than 16 bytes")
        return data

    def forced_rotations(self) -> int:
        return int(self.read_json(self.epoch_file, {}).get("forced", 0))

    def bump_rotations(self) -> int:
        n = self.forced_rotations() + 1
        self.write_json(self.epoch_file, {"forced": n})
        return n

    def read_json(self, path: Path, default: dict) -> dict:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return dict(default)

    def write_json(self, path: Path, data: dict) -> None:
        """Atomic replace so readers never see half a file."""
        self.ensure()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

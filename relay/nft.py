"""Talking to nftables: one transaction per call, JSON in, all or nothing.

nftables applies one input (a JSON command list or a file) as a single kernel transaction,
which is what makes apply, reload and rotation atomic. Two interchangeable backends:

* libnftables in-process through Debian's `python3-nftables` binding, when importable
  (saves a process start per transaction: rotation drops from ~10 ms to ~2 ms);
* the `nft` binary (`nft -j -f -`), always available with the nftables package.

`CFR_NFT_BACKEND=cli` forces the binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from typing import Any

from relay.errors import NftError, RelayError

NFT = os.environ.get("CFR_NFT", "nft")


def _nft_path() -> str:
    path = shutil.which(NFT)
    if path is None:
        raise RelayError(f"'{NFT}' not found: install the nftables package")
    return path


def _lib() -> Any:
    """A fresh libnftables context, or None when the binding is unavailable."""
    if os.environ.get("CFR_NFT_BACKEND") == "cli":
        return None
    try:
        import nftables  # Debian: python3-nftables
    except ImportError:
        return None
    ctx = nftables.Nftables()
    ctx.set_json_output(True)
    ctx.set_handle_output(False)
    return ctx


def backend() -> str:
    return "libnftables" if _lib() is not None else "nft-cli"


def _run_cli(args: list[str], stdin: str | None) -> tuple[int, str, str]:
    proc = subprocess.run([_nft_path(), *args], input=stdin, capture_output=True, text=True,
                          check=False)
    return proc.returncode, proc.stdout, proc.stderr


def run(args: list[str], stdin: str | None = None) -> str:
    """`nft ARGS` (with stdin as the input file when ARGS end in `-f -`)."""
    lib = _lib()
    if lib is not None and args[-2:] == ["-f", "-"] and stdin is not None:
        flags = set(args[:-2])
        lib.set_dry_run("-c" in flags)
        if "-j" in flags:
            rc, out, err = lib.json_cmd(json.loads(stdin))
            out = json.dumps(out) if isinstance(out, (dict, list)) else out
        else:
            rc, out, err = lib.cmd(stdin)
    else:
        rc, out, err = _run_cli(args, stdin)
    if rc != 0:
        msg = (err or "").strip() or (out or "").strip() or f"exit status {rc}"
        raise NftError(f"nft {' '.join(args)} failed: {msg}")
    return out or ""


def apply(transaction: dict, check_only: bool = False) -> None:
    """Apply (or with check_only, only validate in the kernel) one JSON transaction."""
    args = ["-j", "-f", "-"]
    if check_only:
        args.insert(0, "-c")
    run(args, json.dumps(transaction))


def list_table(table: str, family: str = "inet") -> list[dict[str, Any]] | None:
    """The table as nft JSON items, or None if it does not exist."""
    lib = _lib()
    if lib is not None:
        rc, out, err = lib.cmd(f"list table {family} {table}")
    else:
        rc, out, err = _run_cli(["-j", "list", "table", family, table], None)
    if rc != 0:
        if "No such file or directory" in err:
            return None
        raise NftError(f"nft list table {family} {table} failed: {err.strip()}")
    return json.loads(out).get("nftables", [])


def table_exists(table: str, family: str = "inet") -> bool:
    return list_table(table, family) is not None


def counters(items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out = {}
    for it in items:
        c = it.get("counter")
        if c is not None and "name" in c:
            out[c["name"]] = {"packets": int(c.get("packets", 0)), "bytes": int(c.get("bytes", 0))}
    return out


def delete_table(table: str, family: str = "inet") -> bool:
    """Remove the relay's table; False if it did not exist."""
    if not table_exists(table, family):
        return False
    apply({"nftables": [{"delete": {"table": {"family": family, "name": table}}}]})
    return True


def stale_timeouts(items: list[dict[str, Any]], wanted: set[str]) -> list[str]:
    return [it["ct timeout"]["name"] for it in items
            if "ct timeout" in it and it["ct timeout"]["name"] not in wanted]


def delete_objects(table: str, kind: str, names: list[str], family: str = "inet") -> None:
    """Best effort: an object still referenced stays (the kernel refuses with EBUSY).

    Text syntax on purpose: nftables 1.0.6 aborts (assertion in cmd_evaluate_delete) on a
    JSON `delete` of a ct timeout object, which would kill an in-process caller."""
    for name in names:
        with contextlib.suppress(NftError):
            run(["-f", "-"], f"delete {kind} {family} {table} {name}\n")

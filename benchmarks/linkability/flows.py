"""The flow table every linkability analysis runs on.

One columnar table (numpy arrays, one row per observed flow) is shared by the emulation
analysis (``observations.join_records`` builds it from real records) and by the ISP-scale
model (``simulator.simulate`` builds it from a synthetic trace). Linkers and metrics only see
this table, so the same code scores both, which is what makes
``simulator.validate_against_emulation`` meaningful.

Columns are integer *codes* rather than strings: adversary-visible values (alias address,
prefixes, port, ticket hashes) and ground truth (household, device, site) are factorized once,
and every metric is then a handful of sorts and bincounts, never a loop over flows or pairs.

Conventions:

* ``household`` is the true subscriber (one access line = one household); ``-1`` means the
  flow has no ground truth (seen only at the front door) and such rows are ignored by metrics.
* ``addr`` codes the *observed* source address (the alias the front door sees).
* ``prefix[bits]`` codes the observed address's IPv6 prefix of that length. For IPv4 flows it
  equals the address code shifted into a separate code space, so prefix linkers degrade to the
  address linker on IPv4 instead of merging unrelated IPv4 addresses.
* ``psk`` codes the ticket identity a flow *presented* (``-1`` for a full handshake);
  ``issued_flow``/``issued_ticket`` list (flow row, ticket code) pairs for tickets the front
  door issued on a connection, in the same code space as ``psk``.
* ``own_addr``/``own_prefix``/``own_family`` (optional, ground truth): the client's *own*
  source address before any relay or NAT (``local_addr``). The model uses them to re-apply
  policies to an emulated trace; no linker ever reads them.
* ``extra`` (optional, adversary-visible): further per-flow observation codes by name, one
  int64 array per name, ``-1`` = not observed (for example front-door fingerprints: TTL or
  hop limit, SYN options, JA4 of the outer ClientHello, HTTP/2 SETTINGS). Generic so that
  fingerprint linkers (``fingerprints.py``) can add signals without changing this table;
  ``subset`` carries them along.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

PREFIX_BITS: tuple[int, ...] = (64, 56, 48)


def factorize(
    values: Sequence[Hashable], missing: Hashable | None = None
) -> tuple[np.ndarray, list]:
    """Map arbitrary hashable values to dense int64 codes in first-seen order.

    ``missing`` (for example ``None``) is coded ``-1``. Returns (codes, list of distinct values),
    so ``names[codes[i]] == values[i]``. Used for small emulation traces only; the simulator
    produces codes directly.
    """
    table: dict[Hashable, int] = {}
    names: list = []
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v == missing:
            codes[i] = -1
            continue
        c = table.get(v)
        if c is None:
            c = len(names)
            table[v] = c
            names.append(v)
        codes[i] = c
    return codes, names


@dataclass
class FlowTable:
    """Columnar table of observed flows with ground truth (see module docstring)."""

    ts: np.ndarray
    household: np.ndarray
    device: np.ndarray
    site: np.ndarray
    sensitive: np.ndarray
    family: np.ndarray
    addr: np.ndarray
    port: np.ndarray
    prefix: dict[int, np.ndarray]
    psk: np.ndarray
    issued_flow: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    issued_ticket: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    session: np.ndarray | None = None
    names: dict[str, list] = field(default_factory=dict)
    own_addr: np.ndarray | None = None
    own_prefix: dict[int, np.ndarray] | None = None
    own_family: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def __post_init__(self) -> None:
        n = self.ts.shape[0]
        for name in ("household", "device", "site", "sensitive", "family", "addr", "port", "psk"):
            col = getattr(self, name)
            if col.shape[0] != n:
                raise ValueError(f"column {name} has {col.shape[0]} rows, expected {n}")
        for bits, col in self.prefix.items():
            if col.shape[0] != n:
                raise ValueError(f"prefix /{bits} has {col.shape[0]} rows, expected {n}")
        if self.issued_flow.shape != self.issued_ticket.shape:
            raise ValueError("issued_flow and issued_ticket differ in length")
        for name, col in self.extra.items():
            if col.shape[0] != n:
                raise ValueError(f"extra column {name!r} has {col.shape[0]} rows, expected {n}")

    def subset(self, mask: np.ndarray) -> FlowTable:
        """Rows where ``mask`` is true (issued-ticket pairs are re-indexed)."""
        mask = np.asarray(mask, dtype=bool)
        new_index = np.cumsum(mask) - 1
        keep_issued = mask[self.issued_flow] if self.issued_flow.size else np.zeros(0, bool)
        return FlowTable(
            ts=self.ts[mask],
            household=self.household[mask],
            device=self.device[mask],
            site=self.site[mask],
            sensitive=self.sensitive[mask],
            family=self.family[mask],
            addr=self.addr[mask],
            port=self.port[mask],
            prefix={b: c[mask] for b, c in self.prefix.items()},
            psk=self.psk[mask],
            issued_flow=new_index[self.issued_flow[keep_issued]],
            issued_ticket=self.issued_ticket[keep_issued],
            session=None if self.session is None else self.session[mask],
            names=self.names,
            own_addr=None if self.own_addr is None else self.own_addr[mask],
            own_prefix=None
            if self.own_prefix is None
            else {b: c[mask] for b, c in self.own_prefix.items()},
            own_family=None if self.own_family is None else self.own_family[mask],
            extra={k: c[mask] for k, c in self.extra.items()},
        )

    def labelled(self) -> FlowTable:
        """Only flows with ground truth (household known)."""
        return self.subset(self.household >= 0)

"""Tiny builders for nftables JSON (libnftables-json(5)) expressions and commands.

Plain dicts, so the generated ruleset is data that can be compared with golden files and
diffed; no string templating of nft syntax.
"""

from __future__ import annotations

import ipaddress
from typing import Any

Expr = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def payload(protocol: str, fld: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": fld}}


def raw_payload(base: str, offset: int, length: int) -> Expr:
    return {"payload": {"base": base, "offset": offset, "len": length}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def ct(key: str) -> Expr:
    return {"ct": {"key": key}}


def match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def counter(name: str) -> Expr:
    return {"counter": name}


def verdict(name: str, target: str | None = None) -> Expr:
    if target is None:
        return {name: None}
    return {name: {"target": target}}


def net(n: Net) -> Any:
    """A prefix, or a bare address for a host prefix (nft prints those without /32)."""
    if n.prefixlen == n.max_prefixlen:
        return str(n.network_address)
    return {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}


def int_range(n: Net) -> Expr:
    """A prefix as an integer range, for raw payload matches (ICMP inner headers)."""
    lo, hi = int(n.network_address), int(n.broadcast_address)
    if n.version == 4:
        return {"range": [lo, hi]}
    return {"range": [f"0x{lo:032x}", f"0x{hi:032x}"]}


def anon_set(items: list[Any]) -> Expr:
    return {"set": items}


def add(kind: str, body: dict) -> dict:
    return {"add": {kind: body}}


def flush(kind: str, body: dict) -> dict:
    return {"flush": {kind: body}}


def delete(kind: str, body: dict) -> dict:
    return {"delete": {kind: body}}

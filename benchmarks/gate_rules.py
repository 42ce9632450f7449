"""The regression gate's table: which figures are gated, against which threshold, and why.

Why a table: the questions the gate answers ("did the relay get slower?", "does a subscriber
get less through it?", "does it cost more CPU per packet?") change more often than the code
that answers them. Each `[[rule]]` of ci/tolerances.toml selects comparison rows of
results.json by measurement, metric, metric class and path (globs), and says how far the
figure may move between the baseline run and the current run before the build fails:

- `margin_factor = F`: the within-run DIFFERENCE (path - reference, in the metric's unit) may
  shift by less than F x the comparison's equivalence margin (the margin of the baseline's
  TOST, e.g. max(0.1 ms, 1% of the direct median)). Used for latency.
- `max_change = X`: the within-run RATIO (path / reference) may change by less than a factor
  1 - X in the metric's bad direction (or 1 + X for lower-is-better metrics).

Everything a rule does not select is reported for information and never fails the build.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from testbed.errors import UsageError

#: The CI's tolerance table, read as data: the gate is benchmark analysis (the application's
#: `cfrbench compare` runs it, and may not import `ci`), the table is CI policy.
DEFAULT_TOLERANCES = Path(__file__).resolve().parents[1] / "ci" / "tolerances.toml"
GATE_ON = ("ratios", "medians", "both")
KINDS = ("latency", "throughput", "rate", "cpu", "jitter", "loss")
_GATE_KEYS = {"gate_on": str, "fail_on_missing": bool, "fail_on_verdict_flip": bool,
              "confidence": float, "lean": float}
_INFO_KEYS = ("margin_factor", "max_change")
_RULE_KEYS = ("name", "why", "measurement", "metric", "kinds", "paths", "reference",
              "margin_factor", "max_change")


class GateError(UsageError):
    """A results or tolerances file the gate cannot use (exit status 2)."""


@dataclass(frozen=True)
class Rule:
    """One gated figure: a selection of comparison rows and its threshold."""

    name: str
    why: str = ""
    measurement: str | None = None
    metric: str | None = None
    kinds: tuple[str, ...] = ()
    paths: tuple[str, ...] = ("*",)
    reference: str | None = None
    margin_factor: float | None = None
    max_change: float | None = None

    @property
    def comparator(self) -> str:
        """"difference" (shift of path - reference) or "ratio" (change of path / reference)."""
        return "difference" if self.margin_factor is not None else "ratio"

    def matches(self, measurement: str, metric: str, kind: str, path: str,
                reference: str | None) -> bool:
        """Does this rule select the figure of `path` (vs `reference`; None for a path's own
        median, which any reference allows)?"""
        return ((self.measurement is None or self.measurement == measurement)
                and (self.metric is None or self.metric == metric)
                and (not self.kinds or kind in self.kinds)
                and any(fnmatch.fnmatchcase(path, p) for p in self.paths)
                and (reference is None or self.reference is None
                     or self.reference == reference))


@dataclass(frozen=True)
class Tolerances:
    """Gate settings plus the rule table (see ci/tolerances.toml for each value's reason).

    `info_margin_factor` / `info_max_change` only label ungated rows (regressed, improved)
    for the reader; they never fail the build."""

    rules: tuple[Rule, ...] = ()
    gate_on: str = "ratios"
    fail_on_missing: bool = True
    fail_on_verdict_flip: bool = True
    confidence: float = 0.95
    #: the cut between ok and undecided for a CI containing the threshold, as a fraction of
    #: the threshold (benchmarks/gate_change.py)
    lean: float = 0.5
    info_margin_factor: float = 2.0
    info_max_change: float = 0.10
    source: str = field(default="(defaults)", compare=False)

    def rule_for(self, measurement: str, metric: str, kind: str, path: str,
                 reference: str | None) -> Rule | None:
        """The first rule that selects this figure, or None (information only)."""
        for rule in self.rules:
            if rule.matches(measurement, metric, kind, path, reference):
                return rule
        return None


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    """Read a tolerances TOML (default ci/tolerances.toml). GateError names the key of the
    first problem (unknown key, wrong type, a rule with both or neither threshold)."""
    path = Path(path) if path is not None else DEFAULT_TOLERANCES
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GateError(f"{path}: cannot read tolerances: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise GateError(f"{path}: invalid TOML: {e}") from e
    _only(path, "", data, ("gate", "info", "rule"))
    gate = data.get("gate", {})
    _only(path, "gate.", gate, tuple(_GATE_KEYS))
    info = data.get("info", {})
    _only(path, "info.", info, _INFO_KEYS)
    settings: dict[str, Any] = {}
    for key, typ in _GATE_KEYS.items():
        if key in gate:
            settings[key] = _typed(path, f"gate.{key}", gate[key], typ)
    if settings.get("gate_on", "ratios") not in GATE_ON:
        raise GateError(f"{path}: invalid gate.gate_on={settings['gate_on']!r}; allowed: "
                        f"{', '.join(GATE_ON)}")
    if not 0.5 <= settings.get("confidence", 0.95) < 1.0:
        raise GateError(f"{path}: gate.confidence must be in [0.5, 1), got "
                        f"{settings['confidence']!r}")
    if not 0.0 < settings.get("lean", 0.5) <= 1.0:
        raise GateError(f"{path}: gate.lean must be in (0, 1], got {settings['lean']!r}")
    for key in _INFO_KEYS:
        if key in info:
            settings[f"info_{key}"] = _positive(path, f"info.{key}", info[key])
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise GateError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    parsed = tuple(_rule(path, i, r) for i, r in enumerate(rules))
    names = [r.name for r in parsed]
    if len(set(names)) != len(names):
        raise GateError(f"{path}: rule names must be unique, got {names}")
    return Tolerances(rules=parsed, source=str(path), **settings)


def _rule(path: Path, i: int, r: Mapping[str, Any]) -> Rule:
    where = f"rule[{i}]"
    if not isinstance(r, Mapping):
        raise GateError(f"{path}: {where} must be a table")
    _only(path, f"{where}.", r, _RULE_KEYS)
    if "name" not in r:
        raise GateError(f"{path}: {where} needs a name")
    where = f"rule '{r['name']}'"
    if ("margin_factor" in r) == ("max_change" in r):
        raise GateError(f"{path}: {where} needs exactly one of margin_factor (shift of the "
                        "within-run difference) or max_change (change of the within-run ratio)")
    kinds = tuple(_strings(path, f"{where}.kinds", r.get("kinds", [])))
    for k in kinds:
        if k not in KINDS:
            raise GateError(f"{path}: {where}.kinds: unknown class {k!r}; allowed: "
                            f"{', '.join(KINDS)}")
    paths = tuple(_strings(path, f"{where}.paths", r.get("paths", ["*"])))
    if not paths:
        raise GateError(f"{path}: {where}.paths must name at least one path (glob)")
    max_change = r.get("max_change")
    if max_change is not None:
        max_change = _positive(path, f"{where}.max_change", max_change)
        if max_change >= 1.0:
            raise GateError(f"{path}: {where}.max_change must be < 1 (a fraction), got "
                            f"{max_change}")
    margin_factor = r.get("margin_factor")
    return Rule(
        name=_typed(path, f"{where}.name", r["name"], str),
        why=_typed(path, f"{where}.why", r.get("why", ""), str),
        measurement=_opt_str(path, f"{where}.measurement", r.get("measurement")),
        metric=_opt_str(path, f"{where}.metric", r.get("metric")),
        kinds=kinds, paths=paths,
        reference=_opt_str(path, f"{where}.reference", r.get("reference")),
        margin_factor=None if margin_factor is None else _positive(
            path, f"{where}.margin_factor", margin_factor),
        max_change=max_change,
    )


def _only(path: Path, prefix: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
    if not isinstance(table, Mapping):
        raise GateError(f"{path}: '{prefix.rstrip('.')}' must be a table")
    for key in table:
        if key not in allowed:
            raise GateError(f"{path}: unknown key '{prefix}{key}'; allowed: "
                            f"{', '.join(allowed)}")


def _typed(path: Path, key: str, v: Any, typ: type) -> Any:
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise GateError(f"{path}: {key} must be a {typ.__name__}, got {v!r}")
    return v


def _positive(path: Path, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise GateError(f"{path}: {key} must be a number > 0, got {v!r}")
    return float(v)


def _opt_str(path: Path, key: str, v: Any) -> str | None:
    return None if v is None else _typed(path, key, v, str)


def _strings(path: Path, key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise GateError(f"{path}: {key} must be a list of strings, got {v!r}")
    return list(v)

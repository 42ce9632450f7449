"""Declarative benchmark definitions (flent-style): one TOML file per benchmark in
`benchmarks/definitions/`, validated into frozen dataclasses.

Why declarative: what a benchmark measures (paths, tools, repetitions, margins) must be
reviewable and versioned apart from how the runner drives the network, and stored verbatim in
`results.json` so a report can be re-analysed offline. Validation is strict: every unknown key,
tool, path or profile is an error naming the key and the allowed values (exit status 2 through
`testbed.errors.UsageError`), because a typo silently ignored would measure the wrong thing.

See `definitions/latency.toml` for a commented example of the format.

Families: a definition lists paths by their IPv4 names and says which address families to
measure in `[scenario] family` ("ipv4", "ipv6" or "dual"; a profile may override it, and
`cfrbench run --family` overrides both). Parsing expands the names to the rows of
`benchmarks/paths.py` of those families (IPv4 paths first, then their IPv6 twins) and every
comparison pair once per family; the raw table keeps the IPv4 names, so a stored definition
re-parses to the same paths.

Over 400 lines on purpose: the definition format's one parser and validator, so every key's
error names the key and its allowed range in one consistent way; most of its length is those
checks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from benchmarks import paths as path_table
from benchmarks.registry import BASELINE_PATH, PROFILES, TOOLS
from testbed.errors import UsageError

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"

ECH_MODES = ("shared", "split")
FAMILIES = tuple(path_table.FAMILY_SETS)
PLOT_KINDS = ("cdf", "added_delay", "throughput", "sweep")

_TOP_KEYS = ("benchmark", "scenario", "measurements", "analysis", "plots", "profiles", "sweep")
_BENCH_KEYS = ("name", "title", "description", "paths")
_SCENARIO_KEYS = (
    "ech_mode",
    "subscribers",
    "family",
    "link_delay_ms",
    "link_rate_mbit",
    "link_queue_packets",
    "pool_size",
    "epoch_s",
)
_MEAS_KEYS = ("name", "tool", "description", "repetitions", "warmup", "paths", "options",
              "look_every", "report_only", "compare", "margins")
_ANALYSIS_KEYS = (
    "baseline",
    "compare",
    "equivalence_margin_ms",
    "equivalence_margin_rel",
    "ratio_margin",
    "alpha",
    "confidence",
    "bootstrap_resamples",
    "margins",
)
_MARGIN_KEYS = ("abs_ms", "rel", "ratio_margin")
_PLOT_KEYS = ("kind", "metrics", "title")
_SWEEP_KEYS = ("link", "delay_ms")
_PROFILE_KEYS = ("repetitions", "warmup", "look_every", "paths", "sweep", "scenario",
                 "measurements")
_PROFILE_MEAS_KEYS = ("repetitions", "warmup", "options", "paths", "look_every", "report_only")


class DefinitionError(UsageError):
    """A benchmark definition (or a request for one) is invalid.

    `key` is the dotted location of the offending key, `allowed` the accepted values, so the
    CLI can print one line that tells the user exactly what to fix."""

    def __init__(
        self, source: str, key: str, problem: str, allowed: Iterable[str] | None = None
    ) -> None:
        self.source = source
        self.key = key
        self.allowed = tuple(allowed) if allowed is not None else None
        msg = f"{source}: {problem} '{key}'" if key else f"{source}: {problem}"
        if self.allowed is not None:
            msg += f"; allowed: {', '.join(self.allowed) or '(none)'}"
        super().__init__(msg)


@dataclass(frozen=True)
class Scenario:
    """The emulated network a benchmark runs on."""

    ech_mode: str = "split"
    subscribers: int = 1
    #: address families measured: "ipv4" (the paths listed), "ipv6" (their IPv6 twins of
    #: benchmarks/paths.py) or "dual" (both); the network itself is always dual stack
    family: str = "ipv4"
    #: one-way delay per link class of the topology (access, aggregation, wan, cdn, detour)
    link_delay_ms: Mapping[str, float] = field(default_factory=dict)
    link_rate_mbit: Mapping[str, float] = field(default_factory=dict)
    #: bottleneck queue (packets) of a rate-limited link class; about one BDP lets TCP fill
    #: the link without the queue dropping its bursts
    link_queue_packets: Mapping[str, int] = field(default_factory=dict)
    pool_size: int | None = None
    epoch_s: float | None = None


@dataclass(frozen=True)
class Margin:
    """Equivalence margin of one metric. Latency-like metrics: max(abs_ms, rel * baseline
    median); ratio metrics (throughput, rate, cost): the ratio within 1 +- ratio_margin
    (None: the analysis' ratio_margin)."""

    abs_ms: float = 0.1
    rel: float = 0.01
    ratio_margin: float | None = None

    def resolve(self, baseline_median: float) -> float:
        return max(self.abs_ms, self.rel * abs(baseline_median))


@dataclass(frozen=True)
class Measurement:
    """One tool run repeatedly over each of its paths.

    `repetitions` is the budget in blocks; with `look_every` the comparisons are tested
    after every that many blocks and a path stops being sampled once all its comparisons
    are decided (benchmarks/sequential.py). `report_only` measurements are summarised and
    compared but give no verdict (e.g. unshaped veth throughput, which measures the
    machine, not the path). `compare` replaces the analysis' pairs for this measurement;
    `margins` override the analysis' margins per metric."""

    name: str
    tool: str
    repetitions: int
    warmup: int
    paths: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    look_every: int | None = None
    report_only: bool = False
    compare: tuple[tuple[str, str], ...] = ()
    margins: Mapping[str, Margin] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m.name for m in TOOLS[self.tool].metrics)


@dataclass(frozen=True)
class AnalysisSpec:
    """How to compare paths: pairs, margins, confidence levels, bootstrap size."""

    baseline: str = BASELINE_PATH
    compare: tuple[tuple[str, str], ...] = ()
    equivalence_margin_ms: float = 0.1
    equivalence_margin_rel: float = 0.01
    #: relative margin for non-latency metrics (ratio CI within 1 +- ratio_margin = equivalent)
    ratio_margin: float = 0.05
    alpha: float = 0.05
    confidence: float = 0.95
    #: accepted for definitions written before the exact intervals; unused
    bootstrap_resamples: int = 5000
    margins: Mapping[str, Margin] = field(default_factory=dict)

    def margin_for(self, metric: str, measurement: Measurement | None = None) -> Margin:
        """The measurement's own margin for `metric`, else the analysis', else the defaults."""
        if measurement is not None and metric in measurement.margins:
            return measurement.margins[metric]
        return self.margins.get(
            metric, Margin(self.equivalence_margin_ms, self.equivalence_margin_rel)
        )

    def ratio_margin_for(self, metric: str, measurement: Measurement | None = None) -> float:
        m = self.margin_for(metric, measurement)
        return self.ratio_margin if m.ratio_margin is None else m.ratio_margin

    def pairs_for(self, measurement: Measurement) -> tuple[tuple[str, str], ...]:
        """The (A, B) pairs compared for one measurement, both paths measured by it."""
        pairs = measurement.compare or self.compare or tuple(
            (base, p) for p in measurement.paths
            if p != (base := path_table.baseline_for(p, self.baseline)))
        return tuple(pr for pr in pairs if pr[0] in measurement.paths
                     and pr[1] in measurement.paths)


@dataclass(frozen=True)
class PlotSpec:
    kind: str
    metrics: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class Sweep:
    """Vary the one-way delay of one link over these values (outer loop of the run)."""

    link: str
    delay_ms: tuple[float, ...]


@dataclass(frozen=True)
class MeasurementOverride:
    repetitions: int | None = None
    warmup: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    paths: tuple[str, ...] | None = None
    look_every: int | None = None
    report_only: bool | None = None


@dataclass(frozen=True)
class Profile:
    """Overrides applied by `--profile NAME`: fewer or more repetitions, a delay sweep."""

    name: str
    repetitions: int | None = None
    warmup: int | None = None
    look_every: int | None = None
    paths: tuple[str, ...] | None = None
    sweep: Sweep | None = None
    scenario: Mapping[str, Any] = field(default_factory=dict)
    measurements: Mapping[str, MeasurementOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkDefinition:
    """A validated benchmark. `profile` is None until `with_profile` resolved the overrides."""

    name: str
    title: str
    description: str
    paths: tuple[str, ...]
    scenario: Scenario
    measurements: tuple[Measurement, ...]
    analysis: AnalysisSpec
    plots: tuple[PlotSpec, ...]
    profiles: Mapping[str, Profile]
    sweep: Sweep | None = None
    profile: str | None = None
    source: str = ""
    #: the address families measured (from scenario.family: IPv4 paths first, then IPv6)
    families: tuple[int, ...] = (4,)
    #: the raw TOML table, kept so the resolved definition can be stored and re-parsed
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def measurement(self, name: str) -> Measurement:
        for m in self.measurements:
            if m.name == name:
                return m
        raise DefinitionError(
            self.source, name, "unknown measurement", (m.name for m in self.measurements)
        )

    def metrics(self) -> tuple[str, ...]:
        """Every metric this benchmark's tools yield, in definition order, no duplicates."""
        seen: dict[str, None] = {}
        for m in self.measurements:
            for name in m.metrics:
                seen.setdefault(name, None)
        return tuple(seen)

    def sweep_points(self) -> list[dict[str, float]]:
        """The `sweep` value of each record: [{}] without a sweep, else one per delay."""
        if self.sweep is None:
            return [{}]
        return [{"delay_ms": d} for d in self.sweep.delay_ms]

    def with_profile(self, name: str) -> BenchmarkDefinition:
        """This definition with profile `name` applied (a profile the file does not define
        means the base values). Raises DefinitionError for a name outside PROFILES."""
        if name not in PROFILES:
            raise DefinitionError(self.source, name, "unknown profile", PROFILES)
        if self.profile is not None:
            raise DefinitionError(self.source, name, f"profile {self.profile} already applied")
        raw = copy.deepcopy(dict(self.raw))
        prof = self.profiles.get(name)
        if prof is not None:
            raw = _apply_profile(raw, prof)
        raw.pop("profiles", None)
        resolved = parse_definition(raw, source=self.source)
        return replace(resolved, profile=name, profiles=self.profiles)

    def with_family(self, family: str) -> BenchmarkDefinition:
        """This definition measuring `family` ("ipv4", "ipv6" or "dual": `cfrbench run
        --family`), whatever its scenario and profile said; kept in the raw table so the
        stored definition says what ran."""
        if family not in FAMILIES:
            raise DefinitionError(self.source, family, "unknown address family", FAMILIES)
        raw = copy.deepcopy(dict(self.raw))
        raw.setdefault("scenario", {})["family"] = family
        resolved = parse_definition(raw, source=self.source)
        return replace(resolved, profile=self.profile, profiles=self.profiles)

    def to_dict(self) -> dict[str, Any]:
        """TOML-shaped dict that `parse_definition` accepts again (stored in results.json)."""
        raw = copy.deepcopy(dict(self.raw))
        raw.setdefault("benchmark", {})["name"] = self.name
        if self.profile is not None:
            raw.pop("profiles", None)
        return raw


# ----------------------------------------------------------------------------- parsing


class _Checker:
    """Type and key checks that name the offending key in their errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str, allowed: Iterable[str] | None = None) -> DefinitionError:
        return DefinitionError(self.source, key, problem, allowed)

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "expected a table at")
        return value

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                loc = f"{where}.{key}" if where else key
                raise self.fail(loc, "unknown key", allowed)

    def number(
        self, table: Mapping[str, Any], key: str, where: str, default: Any, *,
        minimum: float | None = None, integer: bool = False, exclusive: bool = False,
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        loc = f"{where}.{key}"
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        bad_float = isinstance(value, float) and not math.isfinite(value)
        if isinstance(value, bool) or not ok or bad_float:
            raise self.fail(loc, f"expected {'an integer' if integer else 'a number'} for")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise self.fail(loc, f"value {value!r} {'<=' if exclusive else '<'} {minimum} for")
        return value if integer else float(value)

    def string(
        self, table: Mapping[str, Any], key: str, where: str, default: Any,
        choices: Sequence[str] | None = None,
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", "expected a string for")
        if choices is not None and value not in choices:
            raise self.fail(f"{where}.{key}", f"unknown value {value!r} for", choices)
        return value

    def paths(self, value: Any, where: str, within: Sequence[str] | None = None) -> tuple[str, ...]:
        """A list of path names as a definition writes them: IPv4 names of the path table
        (`[scenario] family` selects their twins), each once, within `within` if given."""
        allowed = tuple(within) if within is not None else path_table.of_families((4,))
        if not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list of paths for", allowed)
        out: list[str] = []
        for i, p in enumerate(value):
            if p not in allowed:
                raise self.fail(f"{where}[{i}]={p!r}", "unknown path", allowed)
            if p in out:
                raise self.fail(f"{where}[{i}]={p!r}", "duplicate path")
            out.append(p)
        return tuple(out)

    def delays(self, value: Any, where: str) -> dict[str, float]:
        table = self.table(value, where)
        return {k: self.number(table, k, where, None, minimum=0) for k in table}

    def counts(self, value: Any, where: str) -> dict[str, int]:
        table = self.table(value, where)
        return {k: self.number(table, k, where, None, minimum=1, integer=True) for k in table}


def _parse_scenario(c: _Checker, value: Any) -> Scenario:
    t = c.table(value, "scenario")
    c.keys(t, _SCENARIO_KEYS, "scenario")
    return Scenario(
        ech_mode=c.string(t, "ech_mode", "scenario", "split", ECH_MODES),
        subscribers=c.number(t, "subscribers", "scenario", 1, minimum=1, integer=True),
        family=c.string(t, "family", "scenario", "ipv4", FAMILIES),
        link_delay_ms=c.delays(t.get("link_delay_ms", {}), "scenario.link_delay_ms"),
        link_rate_mbit=c.delays(t.get("link_rate_mbit", {}), "scenario.link_rate_mbit"),
        link_queue_packets=c.counts(t.get("link_queue_packets", {}),
                                    "scenario.link_queue_packets"),
        pool_size=c.number(t, "pool_size", "scenario", None, minimum=1, integer=True),
        epoch_s=c.number(t, "epoch_s", "scenario", None, minimum=0, exclusive=True),
    )


def _parse_options(c: _Checker, tool: str, value: Any, where: str) -> dict[str, Any]:
    t = c.table(value, where)
    specs = TOOLS[tool].options
    out: dict[str, Any] = {}
    for key, v in t.items():
        loc = f"{where}.{key}"
        if key not in specs:
            raise c.fail(loc, f"unknown option for tool {tool}:", sorted(specs))
        spec = specs[key]
        if spec.type is bool:
            if not isinstance(v, bool):
                raise c.fail(loc, "expected true/false for")
        elif spec.type is str:
            c.string(t, key, where, None, spec.choices)
        else:
            c.number(t, key, where, None, minimum=spec.minimum, integer=spec.type is int)
            v = float(v) if spec.type is float else v
        out[key] = v
    return out


def _parse_measurement(
    c: _Checker, value: Any, i: int, bench_paths: tuple[str, ...], families: tuple[int, ...]
) -> Measurement:
    """One [[measurements]] table; `bench_paths` are the benchmark's paths as written (IPv4
    names), expanded to `families` after validation."""
    where = f"measurements[{i}]"
    t = c.table(value, where)
    c.keys(t, _MEAS_KEYS, where)
    if "tool" not in t:
        raise c.fail(f"{where}.tool", "missing key", sorted(TOOLS))
    tool = c.string(t, "tool", where, None, sorted(TOOLS))
    name = c.string(t, "name", where, tool)
    where = f"measurements[{i}]({name})"
    unsupported = TOOLS[tool].unsupported_paths
    if "paths" in t:
        paths = c.paths(t["paths"], f"{where}.paths", bench_paths)
        for p in paths:
            if p in unsupported:
                raise c.fail(
                    f"{where}.paths={p!r}", f"tool {tool} cannot run over path",
                    [q for q in bench_paths if q not in unsupported],
                )
    else:
        paths = tuple(p for p in bench_paths if p not in unsupported)
    if not paths:
        raise c.fail(f"{where}.paths", f"no path of this benchmark supports tool {tool}")
    written = paths
    paths = path_table.expand(paths, families)
    metrics = tuple(m.name for m in TOOLS[tool].metrics)
    report_only = t.get("report_only", False)
    if not isinstance(report_only, bool):
        raise c.fail(f"{where}.report_only", "expected true/false for")
    return Measurement(
        name=name,
        tool=tool,
        repetitions=c.number(t, "repetitions", where, 30, minimum=1, integer=True),
        warmup=c.number(t, "warmup", where, 2, minimum=0, integer=True),
        paths=paths,
        options=_parse_options(c, tool, t.get("options", {}), f"{where}.options"),
        description=c.string(t, "description", where, ""),
        look_every=c.number(t, "look_every", where, None, minimum=1, integer=True),
        report_only=report_only,
        compare=path_table.expand_pairs(
            _parse_pairs(c, t["compare"], f"{where}.compare", written), families)
        if "compare" in t else (),
        margins=_parse_margins(c, t.get("margins", {}), f"{where}.margins", metrics),
    )


def _parse_pairs(c: _Checker, pairs: Any, where: str,
                 paths: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if not isinstance(pairs, list) or not pairs:
        raise c.fail(where, "expected a non-empty list of [A, B] path pairs for")
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        got = c.paths(pair, f"{where}[{i}]", paths)
        if len(got) != 2:
            raise c.fail(f"{where}[{i}]", "expected exactly two paths [A, B] in")
        out.append((got[0], got[1]))
    return tuple(out)


def _parse_margins(c: _Checker, value: Any, where: str,
                   metrics: tuple[str, ...]) -> dict[str, Margin]:
    margins: dict[str, Margin] = {}
    mt = c.table(value, where)
    for metric, mv in mt.items():
        loc = f"{where}.{metric}"
        if metric not in metrics:
            raise c.fail(loc, "unknown metric", metrics)
        mtab = c.table(mv, loc)
        c.keys(mtab, _MARGIN_KEYS, loc)
        ratio = c.number(mtab, "ratio_margin", loc, None, minimum=0, exclusive=True)
        if ratio is not None and ratio >= 1:
            raise c.fail(f"{loc}.ratio_margin", f"value {ratio} >= 1 for")
        margins[metric] = Margin(
            abs_ms=c.number(mtab, "abs_ms", loc, 0.1, minimum=0),
            rel=c.number(mtab, "rel", loc, 0.01, minimum=0),
            ratio_margin=ratio,
        )
    return margins


def _parse_analysis(
    c: _Checker, value: Any, paths: tuple[str, ...], metrics: tuple[str, ...],
    families: tuple[int, ...] = (4,),
) -> AnalysisSpec:
    """[analysis]; `paths` as written (IPv4 names); pairs expanded to `families`."""
    t = c.table(value, "analysis")
    c.keys(t, _ANALYSIS_KEYS, "analysis")
    baseline = c.string(t, "baseline", "analysis", BASELINE_PATH)
    if baseline not in paths:
        raise c.fail(f"analysis.baseline={baseline!r}", "not a path of the benchmark:", paths)
    compare: list[tuple[str, str]] = []
    if "compare" in t:
        pairs = t["compare"]
        if not isinstance(pairs, list):
            raise c.fail("analysis.compare", "expected a list of [A, B] path pairs for")
        if pairs:
            compare = list(_parse_pairs(c, pairs, "analysis.compare", paths))
    else:
        compare = [(baseline, p) for p in paths if p != baseline]
    compare = list(path_table.expand_pairs(compare, families))
    margins = _parse_margins(c, t.get("margins", {}), "analysis.margins", metrics)
    alpha = c.number(t, "alpha", "analysis", 0.05, minimum=0, exclusive=True)
    confidence = c.number(t, "confidence", "analysis", 0.95, minimum=0, exclusive=True)
    if alpha >= 0.5:
        raise c.fail("analysis.alpha", f"value {alpha} >= 0.5 for")
    if confidence >= 1:
        raise c.fail("analysis.confidence", f"value {confidence} >= 1 for")
    return AnalysisSpec(
        baseline=baseline,
        compare=tuple(compare),
        equivalence_margin_ms=c.number(t, "equivalence_margin_ms", "analysis", 0.1, minimum=0),
        equivalence_margin_rel=c.number(t, "equivalence_margin_rel", "analysis", 0.01, minimum=0),
        ratio_margin=c.number(t, "ratio_margin", "analysis", 0.05, minimum=0),
        alpha=alpha,
        confidence=confidence,
        bootstrap_resamples=c.number(
            t, "bootstrap_resamples", "analysis", 5000, minimum=100, integer=True
        ),
        margins=margins,
    )


def _parse_plots(c: _Checker, value: Any, metrics: tuple[str, ...]) -> tuple[PlotSpec, ...]:
    if not isinstance(value, list):
        raise c.fail("plots", "expected an array of tables [[plots]] for")
    out = []
    for i, pv in enumerate(value):
        where = f"plots[{i}]"
        t = c.table(pv, where)
        c.keys(t, _PLOT_KEYS, where)
        if "kind" not in t:
            raise c.fail(f"{where}.kind", "missing key", PLOT_KINDS)
        kind = c.string(t, "kind", where, None, PLOT_KINDS)
        names = t.get("metrics", [])
        if not isinstance(names, list):
            raise c.fail(f"{where}.metrics", "expected a list of metric names for", metrics)
        for j, m in enumerate(names):
            if m not in metrics:
                raise c.fail(f"{where}.metrics[{j}]={m!r}", "unknown metric", metrics)
        out.append(PlotSpec(kind, tuple(names), c.string(t, "title", where, "")))
    return tuple(out)


def _parse_sweep(c: _Checker, value: Any, where: str, links: Sequence[str]) -> Sweep:
    t = c.table(value, where)
    c.keys(t, _SWEEP_KEYS, where)
    if "link" not in t:
        raise c.fail(f"{where}.link", "missing key", links)
    link = c.string(t, "link", where, None, tuple(links))
    delays = t.get("delay_ms")
    if not isinstance(delays, list) or not delays:
        raise c.fail(f"{where}.delay_ms", "expected a non-empty list of delays (ms) for")
    values = [c.number({"d": d}, "d", f"{where}.delay_ms[{i}]", None, minimum=0)
              for i, d in enumerate(delays)]
    if len(set(values)) != len(values):
        raise c.fail(f"{where}.delay_ms", "duplicate delay in")
    return Sweep(link, tuple(values))


def _parse_profiles(
    c: _Checker, value: Any, measurement_names: Sequence[str], paths: Sequence[str],
    links: Sequence[str],
) -> dict[str, Profile]:
    t = c.table(value, "profiles")
    out: dict[str, Profile] = {}
    for name, pv in t.items():
        if name not in PROFILES:
            raise c.fail(f"profiles.{name}", "unknown profile", PROFILES)
        where = f"profiles.{name}"
        pt = c.table(pv, where)
        c.keys(pt, _PROFILE_KEYS, where)
        overrides: dict[str, MeasurementOverride] = {}
        mt = c.table(pt.get("measurements", {}), f"{where}.measurements")
        for mname, mv in mt.items():
            loc = f"{where}.measurements.{mname}"
            if mname not in measurement_names:
                raise c.fail(loc, "unknown measurement", measurement_names)
            mtab = c.table(mv, loc)
            c.keys(mtab, _PROFILE_MEAS_KEYS, loc)
            report_only = mtab.get("report_only")
            if report_only is not None and not isinstance(report_only, bool):
                raise c.fail(f"{loc}.report_only", "expected true/false for")
            overrides[mname] = MeasurementOverride(
                repetitions=c.number(mtab, "repetitions", loc, None, minimum=1, integer=True),
                warmup=c.number(mtab, "warmup", loc, None, minimum=0, integer=True),
                look_every=c.number(mtab, "look_every", loc, None, minimum=1, integer=True),
                report_only=report_only,
                options=dict(c.table(mtab.get("options", {}), f"{loc}.options")),
                paths=c.paths(mtab["paths"], f"{loc}.paths", paths) if "paths" in mtab else None,
            )
        scen = dict(c.table(pt.get("scenario", {}), f"{where}.scenario"))
        c.keys(scen, _SCENARIO_KEYS, f"{where}.scenario")
        out[name] = Profile(
            name=name,
            repetitions=c.number(pt, "repetitions", where, None, minimum=1, integer=True),
            warmup=c.number(pt, "warmup", where, None, minimum=0, integer=True),
            look_every=c.number(pt, "look_every", where, None, minimum=1, integer=True),
            paths=c.paths(pt["paths"], f"{where}.paths", paths) if "paths" in pt else None,
            sweep=_parse_sweep(c, pt["sweep"], f"{where}.sweep", links) if "sweep" in pt else None,
            scenario=scen,
            measurements=overrides,
        )
    return out


def _apply_profile(raw: dict[str, Any], prof: Profile) -> dict[str, Any]:
    """Fold a profile's overrides into the raw TOML table (validated again afterwards)."""
    if prof.paths is not None:
        raw.setdefault("benchmark", {})["paths"] = list(prof.paths)
    if prof.sweep is not None:
        raw["sweep"] = {"link": prof.sweep.link, "delay_ms": list(prof.sweep.delay_ms)}
    if prof.scenario:
        scen = raw.setdefault("scenario", {})
        for k, v in prof.scenario.items():
            if isinstance(v, Mapping) and isinstance(scen.get(k), Mapping):
                scen[k] = {**scen[k], **v}
            else:
                scen[k] = v
    for i, m in enumerate(raw.get("measurements", [])):
        name = m.get("name", m.get("tool"))
        o = prof.measurements.get(name, MeasurementOverride())
        reps = o.repetitions if o.repetitions is not None else prof.repetitions
        warm = o.warmup if o.warmup is not None else prof.warmup
        every = o.look_every if o.look_every is not None else prof.look_every
        if reps is not None:
            m["repetitions"] = reps
        if warm is not None:
            m["warmup"] = warm
        if every is not None:
            m["look_every"] = every
        if o.report_only is not None:
            m["report_only"] = o.report_only
        if o.options:
            m["options"] = {**m.get("options", {}), **o.options}
        mpaths = o.paths
        if mpaths is None and prof.paths is not None and "paths" in m:
            mpaths = tuple(p for p in m["paths"] if p in prof.paths)
        if mpaths is not None:
            m["paths"] = list(mpaths)
        # A pair naming a path the profile removed is dropped (whether the profile cut the
        # measurement's own paths or only the benchmark's), like [analysis] compare below.
        kept_paths = mpaths if mpaths is not None else prof.paths
        if kept_paths is not None and "compare" in m:
            kept = [pr for pr in m["compare"] if all(p in kept_paths for p in pr)]
            if kept:
                m["compare"] = kept
            else:
                del m["compare"]
        raw["measurements"][i] = m
    if prof.paths is not None and "analysis" in raw:
        an = raw["analysis"]
        if "compare" in an:
            an["compare"] = [pr for pr in an["compare"] if all(p in prof.paths for p in pr)]
    return raw


def parse_definition(data: Mapping[str, Any], source: str = "<definition>") -> BenchmarkDefinition:
    """Validate a TOML-shaped mapping into a BenchmarkDefinition (profile not applied)."""
    c = _Checker(source)
    top = c.table(data, "")
    c.keys(top, _TOP_KEYS, "")
    bench = c.table(top.get("benchmark", {}), "benchmark")
    c.keys(bench, _BENCH_KEYS, "benchmark")
    base = source.split(" (profile ")[0]
    stem = Path(base).stem if base.endswith(".toml") else None
    name = c.string(bench, "name", "benchmark", stem)
    if not name:
        raise c.fail("benchmark.name", "missing key")
    if stem is not None and name != stem:
        raise c.fail(f"benchmark.name={name!r}", f"name must equal the file name {stem!r}:")
    written = c.paths(bench.get("paths", [BASELINE_PATH]), "benchmark.paths")
    scenario = _parse_scenario(c, top.get("scenario", {}))
    families = path_table.FAMILY_SETS[scenario.family]
    paths = path_table.expand(written, families)
    mlist = top.get("measurements")
    if not isinstance(mlist, list) or not mlist:
        raise c.fail("measurements", "expected at least one [[measurements]] table for")
    measurements = tuple(_parse_measurement(c, m, i, written, families)
                         for i, m in enumerate(mlist))
    names = [m.name for m in measurements]
    for n in names:
        if names.count(n) > 1:
            raise c.fail(f"measurements.name={n!r}", "duplicate measurement name")
    metrics: dict[str, None] = {}
    for m in measurements:
        metrics.update(dict.fromkeys(m.metrics))
    metric_names = tuple(metrics)
    analysis = _parse_analysis(c, top.get("analysis", {}), written, metric_names, families)
    plots = _parse_plots(c, top.get("plots", []), metric_names)
    links = tuple(scenario.link_delay_ms)
    sweep = _parse_sweep(c, top["sweep"], "sweep", links) if "sweep" in top else None
    profiles = _parse_profiles(c, top.get("profiles", {}), names, written, links)
    for prof in profiles.values():
        # Validate every profile now, not only when someone runs it: a typo in the `full`
        # profile must not wait for the one long run that uses it.
        applied = _apply_profile(copy.deepcopy(dict(data)), prof)
        applied.pop("profiles", None)
        parse_definition(applied, source=f"{source} (profile {prof.name})")
    return BenchmarkDefinition(
        name=name,
        title=c.string(bench, "title", "benchmark", name),
        description=c.string(bench, "description", "benchmark", ""),
        paths=paths,
        scenario=scenario,
        measurements=measurements,
        analysis=analysis,
        plots=plots,
        profiles=profiles,
        sweep=sweep,
        source=source,
        families=families,
        raw=copy.deepcopy(dict(data)),
    )


def load_definition(path: str | Path, profile: str | None = None) -> BenchmarkDefinition:
    """Read and validate one TOML file; apply `profile` if given."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise DefinitionError(str(path), "", f"cannot read definition: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(path.name, "", f"invalid TOML: {e}") from e
    definition = parse_definition(data, source=path.name)
    return definition.with_profile(profile) if profile is not None else definition


def available_benchmarks(directory: str | Path = DEFINITIONS_DIR) -> list[str]:
    """Names of the benchmarks defined in `directory` (file stems), sorted."""
    return sorted(p.stem for p in Path(directory).glob("*.toml"))


def load_benchmarks(
    names: Sequence[str] | None, profile: str, directory: str | Path = DEFINITIONS_DIR,
    family: str | None = None,
) -> list[BenchmarkDefinition]:
    """Definitions for `names` (all when empty/None) with `profile` applied, in the order asked;
    `family` ("ipv4", "ipv6", "dual"; default: each definition's own; `cfrbench run
    --family`) replaces the definitions' address families.

    Raises DefinitionError for an unknown benchmark or profile name, naming the allowed ones."""
    if profile not in PROFILES:
        raise DefinitionError("--profile", profile, "unknown profile", PROFILES)
    available = available_benchmarks(directory)
    wanted = list(names) if names else available
    for n in wanted:
        if n not in available:
            raise DefinitionError("--benchmark", n, "unknown benchmark", available)
    loaded = [load_definition(Path(directory) / f"{n}.toml", profile) for n in wanted]
    return [d.with_family(family) for d in loaded] if family is not None else loaded


def definition_from_parameters(entry: Mapping[str, Any]) -> BenchmarkDefinition:
    """Rebuild a resolved definition from its `results.json` parameters entry
    ({"profile": ..., "definition": {...}}), for offline re-analysis."""
    d = parse_definition(entry["definition"], source=f"results:{entry.get('name', '?')}")
    return replace(d, profile=entry.get("profile"))


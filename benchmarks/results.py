"""`results.json`: build, validate against the JSON Schema, write, read, re-analyse.

Why a schema: results outlive the code that made them (baselines for the regression gate,
reports re-rendered months later). `schema_version` says which shape a file has; `validate`
rejects anything else with the JSON path of the first problems, so a broken file fails loudly
instead of producing a misleading comparison.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from benchmarks.analysis import analyse
from benchmarks.definitions import BenchmarkDefinition, definition_from_parameters
from benchmarks.provenance import collect_provenance, empty_link_emulation
from benchmarks.records import read_records
from testbed.errors import UsageError

__all__ = [
    "SCHEMA_VERSION", "SCHEMA_PATH", "RESULTS_FILE", "ResultsError", "new_run_id",
    "build_results", "validate", "write_results", "load_results", "finalize_run",
    "reanalyse_run", "collect_provenance",
]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "results.schema.json"
RESULTS_FILE = "results.json"


class ResultsError(UsageError):
    """results.json is unreadable, not JSON, or does not match the schema."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The results schema, with the path names filled in from the one table of paths
    (benchmarks.paths), so a new path needs no schema edit."""
    from benchmarks import paths as path_table

    data = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    data.setdefault("$defs", {}).setdefault("path", {})["enum"] = list(path_table.NAMES)
    return data


def new_run_id(now: _dt.datetime | None = None) -> str:
    """Sortable, unique run id: UTC timestamp plus 6 random hex digits."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def definition_parameters(definitions: Sequence[BenchmarkDefinition]) -> dict[str, Any]:
    """The resolved definitions, stored so a report can be re-analysed offline."""
    return {d.name: {"name": d.name, "profile": d.profile, "definition": d.to_dict()}
            for d in definitions}


def build_results(
    *,
    analysis: Mapping[str, Any],
    definitions: Sequence[BenchmarkDefinition] = (),
    provenance: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    profile: str | None = None,
    seed: int = 0,
    parameters: Mapping[str, Any] | None = None,
    leak_check: Mapping[str, Any] | None = None,
    linkability: Mapping[str, Any] | None = None,
    resilience: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """Assemble a results dict (not yet validated). `parameters` are the runner's own
    (topology, hosts, durations ...); the definitions and seed are added under
    `definitions` and `seed`."""
    params = dict(parameters or {})
    params["seed"] = seed
    params["definitions"] = definition_parameters(definitions)
    benches = [d.name for d in definitions] or sorted(
        {s["benchmark"] for s in analysis.get("summaries", [])}
    )
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id or new_run_id(),
        "created": created or _utc_now(),
        "profile": profile,
        "benchmarks": benches,
        "parameters": params,
        "provenance": dict(provenance) if provenance is not None else collect_provenance(),
        "summaries": list(analysis.get("summaries", [])),
        "comparisons": list(analysis.get("comparisons", [])),
        "verdicts": dict(analysis.get("verdicts", {})),
        "leak_check": dict(leak_check or {}),
    }
    if linkability is not None:
        out["linkability"] = dict(linkability)
    if resilience is not None:
        out["resilience"] = dict(resilience)
    return clean(out)


def validate(results: Any) -> None:
    """Raise ResultsError naming the JSON path of (up to five of) the schema violations."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(results), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:5]:
            where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            lines.append(f"{where}: {e.message[:200]}")
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ResultsError("results do not match schema v1: " + "; ".join(lines) + more)


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Validate, then write RUN_DIR/results.json atomically (never a half-written file)."""
    data = clean(results)
    validate(data)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULTS_FILE
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".json", dir=run_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def results_path(source: str | Path) -> Path:
    p = Path(source)
    return p / RESULTS_FILE if p.is_dir() else p


def load_results(source: str | Path, check: bool = True) -> dict[str, Any]:
    """Read results.json from a file or run directory; ResultsError if unreadable, not JSON,
    of another schema version, or (with check) invalid."""
    path = results_path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsError(f"{path}: cannot read results: {e.strerror or e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not JSON: {e.msg} at line {e.lineno}") from e
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: not a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {version!r} is not supported (this code reads "
            f"{SCHEMA_VERSION})"
        )
    if check:
        try:
            validate(data)
        except ResultsError as e:
            raise ResultsError(f"{path}: {e}") from e
    return data


def definitions_from_results(results: Mapping[str, Any]) -> dict[str, BenchmarkDefinition]:
    """The resolved definitions stored in results.parameters (empty if none were stored)."""
    stored = results.get("parameters", {}).get("definitions", {})
    return {name: definition_from_parameters(entry) for name, entry in stored.items()}


def finalize_run(
    run_dir: str | Path,
    definitions: Sequence[BenchmarkDefinition],
    *,
    run_id: str | None = None,
    profile: str | None = None,
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    leak_check: Mapping[str, Any] | None = None,
    linkability: Mapping[str, Any] | None = None,
    resilience: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The runner's last step: analyse RUN_DIR/raw/, build, validate and write results.json.

    Returns the results dict. The run id defaults to the run directory's name."""
    run_dir = Path(run_dir)
    defs = {d.name: d for d in definitions}
    analysis = analyse(read_records(run_dir), defs, seed)
    results = build_results(
        analysis=analysis, definitions=definitions, provenance=provenance,
        run_id=run_id or run_dir.name, profile=profile, seed=seed, parameters=parameters,
        leak_check=leak_check, linkability=linkability, resilience=resilience,
    )
    write_results(run_dir, results)
    return results


def reanalyse_run(run_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Re-run the analysis on RUN_DIR/raw/ with the definitions and seed stored in
    results.json; without a results.json, with default settings and unknown provenance.

    Keeps everything the analysis does not produce (provenance, parameters, leak_check,
    linkability). Writes the refreshed results.json when `write`."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    if (run_dir / RESULTS_FILE).is_file():
        old = load_results(run_dir, check=False)
        defs = definitions_from_results(old)
        seed = int(old.get("parameters", {}).get("seed", 0))
        analysis = analyse(records, defs, seed)
        results = dict(old)
        results.update(
            summaries=analysis["summaries"], comparisons=analysis["comparisons"],
            verdicts=analysis["verdicts"],
        )
        results = clean(results)
    else:
        analysis = analyse(records, {}, 0)
        prov = {
            "git_commit": None, "git_dirty": None, "kernel": None, "os": None,
            "cpu_model": None, "cores": None, "tool_versions": {}, "probe": {},
            "link_emulation": empty_link_emulation(),
        }
        results = build_results(analysis=analysis, provenance=prov, run_id=run_dir.name,
                                parameters={"note": "re-analysed from raw/ without results.json"})
    validate(results)
    if write:
        write_results(run_dir, results)
    return results

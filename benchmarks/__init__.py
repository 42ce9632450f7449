"""cfrbench benchmarks: the pure-logic half of the benchmark suite.

The runner (root, namespaces) drives the emulated network and appends raw records; everything
here works on those records alone, so it can be tested without root and re-run offline:

- `registry`: the fixed names (paths, tools, metrics, units) every other module agrees on.
- `definitions`: declarative TOML benchmark definitions (`definitions/*.toml`) -> dataclasses.
- `schedule`: interleaved, randomized, seeded order of paths (A,B,C / C,A,B ...) with warm-ups.
- `records`: the raw record format (`raw/measurements.jsonl`, see RECORDS.md): write, read, check.
- `stats`: medians, percentiles, bootstrap CIs, TOST equivalence, Mann-Whitney.
- `analysis`: raw records -> summaries and path-vs-baseline comparisons with verdicts.
- `provenance`, `results`: `results.json` (schema-versioned) and its JSON Schema.
- `plots`, `report`: Markdown/HTML report, PNG plots and a console table from a run directory.

Comparisons are always made within one run (interleaved order), as differences or ratios with
confidence intervals: absolute times from shared machines are too noisy to judge alone.
"""

"""cfrbench CI helpers: the performance-regression gate (`ci.gate`, a re-export of
`benchmarks.gate`, which `cfrbench compare` runs), its default tolerances
(`tolerances.toml`) and an example CI workflow. Baselines are ordinary run directories
(results.json + raw/), so the gate can bootstrap from raw samples when both runs have them."""

from agg_synth import _rng  # noqa: F401  (fixture)

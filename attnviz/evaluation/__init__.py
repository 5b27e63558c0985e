"""Scoring maps on held-out scenes with known masks: localisation protocols with their baselines, gate ablation,
deletion/insertion curves and channel probes (see `run.evaluate`). Import the submodules; this file imports nothing
heavy."""

"""The benchmark harness (Hydra entry point, data, models, evaluation, report).

Filled in by the benchmarks issue; `lfs` never imports from here.
"""

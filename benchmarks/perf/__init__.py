"""Speed benchmarks: the AM-LFS loss against cross entropy, the executors against each
other, the auto executor, and the smoke tier's wall time.

    python benchmarks/perf/run.py            # everything; figures to results/perf/cpu.csv

Every figure is a ratio to a reference timed in the same process, in paired rounds (subject and
reference back to back, order alternating), so that the load of a shared machine cancels out as
much as it can; the CSV keeps the seconds of both, and the provenance (commit, dirty flag, CPU,
threads, torch version, date). See :mod:`benchmarks.perf.cases`.
"""

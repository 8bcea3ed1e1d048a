"""pytest options and the CSV writer of the speed benchmarks (``pytest benchmarks/perf ...``).

Run them with ``python benchmarks/perf/run.py`` (see there), or by hand::

    pytest benchmarks/perf --benchmark-enable -p no:cacheprovider [--perf-threads 2,1] [--perf-quick]

With benchmarks enabled, every test's rows are merged into ``results/perf/cpu.csv`` (or
``--perf-out``) when the session ends. ``--perf-quick`` (tiny B, one round) is the check that the
suite runs, as the test suite does with ``--benchmark-disable``; it writes only with ``--perf-out``.
"""
from __future__ import annotations

import pytest

_ROWS: list[dict] = []


def pytest_addoption(parser):
    group = parser.getgroup("lfs perf")
    group.addoption("--perf-threads", default="2,1",
                    help="torch thread counts to measure at, comma-separated (default 2,1)")
    group.addoption("--perf-quick", action="store_true", help="tiny sizes and one round: a check that it runs")
    group.addoption("--perf-out", default=None, help="CSV to merge the rows into (default results/perf/cpu.csv)")


def pytest_generate_tests(metafunc):
    if "threads" in metafunc.fixturenames:
        threads = [int(t) for t in str(metafunc.config.getoption("--perf-threads")).split(",") if t.strip()]
        metafunc.parametrize("threads", threads, ids=[f"threads={t}" for t in threads])


@pytest.fixture
def quick(request) -> bool:
    return bool(request.config.getoption("--perf-quick"))


@pytest.fixture
def perf_rows():
    """Append the test's result rows here; they are written when the session ends."""
    return _ROWS


@pytest.fixture(autouse=True)
def _restore_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    out = config.getoption("--perf-out")
    bs = getattr(config, "_benchmarksession", None)
    disabled = bool(bs.disabled) if bs is not None else True
    if not _ROWS or (out is None and (disabled or config.getoption("--perf-quick"))):
        return
    from benchmarks.perf.cases import write_rows

    path = write_rows(_ROWS, out)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"perf: {len(_ROWS)} rows merged into {path}")

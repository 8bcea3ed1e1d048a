"""The one error type for missing or malformed datasets.

Every loader in :mod:`benchmarks.data` raises :class:`DatasetError` when the data on disk is absent
or does not have the layout of the protocol it implements (ARCHITECTURE.md, "Evaluation protocols"). The
message is a single line that names the dataset, the path that was looked at, what is wrong, and
the layout that was expected, e.g.::

    Market-1501 not found at /x: expected /x/bounding_box_train, /x/query, /x/bounding_box_test
    with files like 0002_c1s1_000451_03.jpg

(shown wrapped here; the real message has no line break). It subclasses :class:`ValueError` so
that callers that only know "bad input" can still catch it.
"""
from __future__ import annotations

import os

__all__ = ["DatasetError"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class DatasetError(ValueError):
    """A dataset is missing or malformed.

    ``DatasetError(dataset, path, problem, expected)`` formats the message
    ``"<dataset> <problem> at <path>: expected <expected>"`` on one line (newlines and runs of
    white space are collapsed). The parts are kept as attributes for programmatic use.
    """

    def __init__(self, dataset: str, path: str | os.PathLike, problem: str = "not found",
                 expected: str | None = None):
        self.dataset = str(dataset)
        self.path = os.fspath(path)
        self.problem = _one_line(problem)
        self.expected = None if expected is None else _one_line(expected)
        msg = f"{self.dataset} {self.problem} at {self.path}"
        if self.expected:
            msg += f": expected {self.expected}"
        super().__init__(_one_line(msg))

    @classmethod
    def from_message(cls, message: str) -> "DatasetError":
        """A DatasetError whose message is ``message`` as it is (e.g. recovered from a worker)."""
        err = cls.__new__(cls)
        ValueError.__init__(err, _one_line(message))
        err.dataset, err.path, err.problem, err.expected = "", "", _one_line(message), None
        return err

    def __reduce__(self):  # picklable across DataLoader workers / multiprocessing
        return (type(self), (self.dataset, self.path, self.problem, self.expected))

"""The command line's ``key=value`` overrides, checked before Hydra composes anything, so that a
mistake ends with one line naming it and what to do (Hydra's own messages span many lines, and a
``+key=value`` it suggests would add a key no code reads).

* a config group (``tier=``, ``dataset=``, ``hydra/launcher=``): each value must be one of its files;
* ``method=``: each value must be a file of ``benchmarks/methods/``;
* any other key must exist in ``conf/config.yaml``, in a tier's, a dataset's or a table's file
  (the union: a table's sweep may change the dataset) or under ``method_args.``. ``+key`` may
  only add what is known in this sense; a misspelled key gets the valid keys of its group.
* a ``dataset.*``, ``model.*`` or other key must belong to a dataset the command's jobs can
  have (its ``dataset=``, else its table's sweep for its tier): ``dataset.root`` on a mini tier
  that runs a generated set is refused with the datasets that have it;
* a leading ``~`` in a path (quoted, so the shell left it) is expanded;
* a key that exists in some dataset's file but not in the default dataset's (e.g.
  ``dataset.megaface.root``, ``dataset.loader.num_val_ids``, ``model.kwargs.input_size``) is passed
  to Hydra as ``++key=value``, so the natural form works on a table whose sweep selects that
  dataset (Hydra checks overrides against the config before the sweep chooses the dataset).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parent / "conf"
GROUPS = ("tier", "dataset", "hydra/launcher")
PATH_KEYS = ("results_dir", "cache_dir", "dataset.root")
FREE = ("method_args", "setting")  # subtrees whose keys are the method's or the table's own


class ArgumentError(ValueError):
    """A command-line override no run can use; the message says what to do."""


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in data.items() if k not in ("defaults", "hydra")}


def _merge(into: dict, other: dict) -> dict:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        elif isinstance(v, dict):
            into[k] = _merge({}, v)
        elif k not in into:
            into[k] = v
    return into


@lru_cache(maxsize=None)
def known_tree() -> dict:
    """Every key any run can have: config.yaml merged with every tier, dataset and table file."""
    tree = _load(CONF / "config.yaml")
    for group in ("tier", "dataset", "table"):
        for p in sorted((CONF / group).glob("*.yaml")):
            _merge(tree, _load(p))
    return tree


@lru_cache(maxsize=None)
def config_defaults() -> dict[str, str]:
    """config.yaml's default choice of each config group (``{"dataset": "mnist1d", "tier": "mini", ...}``)."""
    base = yaml.safe_load((CONF / "config.yaml").read_text())
    return {group: name for item in base.get("defaults", []) if isinstance(item, dict)
            for group, name in item.items()}


@lru_cache(maxsize=None)
def default_tree() -> dict:
    """The keys of a run before any group is chosen on the command line (Hydra checks overrides
    against it): config.yaml, its default dataset and tier."""
    return _tree_for([config_defaults()["dataset"]], config_defaults()["tier"], "")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _lookup(tree: dict, key: str) -> tuple[bool, object, str]:
    """(found, the value at ``key`` if found, else the deepest dict reached, the path to it)."""
    node, path = tree, []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, node if isinstance(node, dict) else None, ".".join(path)
        node = node[part]
        path.append(part)
    return True, node, key


def _values(value: str) -> list[str]:
    """The values of a sweep ``a,b,c``; other sweep syntax (ranges, globs) is Hydra's to check."""
    if re.search(r"[\[\](){}*]", value):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def argument(argv: list[str], key: str) -> str | None:
    """The value of ``key=value`` (also ``+key=`` / ``~key=``) in a command line, or None."""
    for arg in argv:
        k, _, v = arg.partition("=")
        if k.lstrip("+~") == key:
            return v
    return None


def run_datasets(argv: list[str]) -> tuple[list[str], str, str]:
    """The datasets a command's jobs can have: its ``dataset=`` values, else the dataset values of
    its table's sweep for its tier, else the default dataset; with the table and tier."""
    table = argument(argv, "table") or ""
    tier = argument(argv, "tier") or config_defaults()["tier"]
    given = argument(argv, "dataset")
    if given:
        return _values(given), table, tier
    sweep = CONF / "sweep" / f"{table}_{tier}.yaml"
    if sweep.exists():
        params = ((yaml.safe_load(sweep.read_text()) or {}).get("hydra") or {}).get("sweeper", {}).get("params", {})
        if "dataset" in params:
            return _values(str(params["dataset"])), table, tier
    return [config_defaults()["dataset"]], table, tier


def _tree_for(datasets: list[str], tier: str, table: str) -> dict:
    tree = _load(CONF / "config.yaml")
    for path in [CONF / "tier" / f"{tier}.yaml", CONF / "table" / f"{table}.yaml",
                 *[CONF / "dataset" / f"{d}.yaml" for d in datasets]]:
        if path.exists():
            _merge(tree, _load(path))
    return tree


def check(argv: list[str]) -> list[str]:
    """Raise :class:`ArgumentError` for the first unusable override; return ``argv`` with the
    rewrites described in the module docstring."""
    from benchmarks import methods

    datasets, table, tier = run_datasets(argv)
    here = _tree_for(datasets, tier, table)
    out = []
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            out.append(arg)
            continue
        raw_key, value = arg.split("=", 1)
        prefix = raw_key[: len(raw_key) - len(raw_key.lstrip("+~"))]
        key = raw_key[len(prefix):]
        if key == "table" or key.startswith(("hydra.", "hydra/")) and key not in GROUPS:
            out.append(arg)
            continue
        if key in GROUPS or key == "method":  # a choice among files: the group's, or benchmarks/methods/
            valid = methods.available() if key == "method" else choices(key)
            for v in _values(value):
                if v not in valid:
                    raise ArgumentError(f"unknown {key} {v!r} ({key}=...); valid: {', '.join(valid)} (lfs-bench list)")
            out.append(arg)
            continue
        if key == "dataset.name":
            raise ArgumentError("choose a dataset with dataset=NAME (dataset.name would only rename the "
                                f"current one); datasets: {', '.join(choices('dataset'))}")
        if key in PATH_KEYS and value.startswith("~"):  # a quoted ~ reaches us unexpanded
            value = os.path.expanduser(value)
            arg = f"{raw_key}={value}"
        free = key.split(".")[0] in FREE or key.startswith("dataset.loader.")  # the loader checks its own arguments
        if not free:
            found, node, where = _lookup(known_tree(), key)
            if not found:
                group = f" in {where}" if where else ""
                keys = ", ".join(sorted(node)) if node else "none (not a group)"
                raise ArgumentError(f"unknown key {key!r}: valid keys{group}: {keys} (lfs-bench list; README)")
            if isinstance(node, dict) and node and "~" not in prefix and not value.lstrip().startswith("{"):
                first = next((k for k in sorted(node) if not isinstance(node[k], dict)), sorted(node)[0])
                raise ArgumentError(f"{key} is a group of keys ({', '.join(sorted(node))}), not a value: set one of "
                                    f"them, e.g. {key}.{first}=... (lfs-bench list; README)")
            if not _lookup(here, key)[0]:
                owners = [p.stem for p in sorted((CONF / "dataset").glob("*.yaml")) if _lookup(_load(p), key)[0]]
                where = f"+table={table} at tier={tier}" if table else f"tier={tier}"
                hint = f"; it is a key of {', '.join(owners)} (dataset=..., or the tier that runs it)" if owners else ""
                raise ArgumentError(f"{key} is not a key of {', '.join(datasets)}, the dataset(s) of {where}{hint}")
        if not prefix and key.split(".")[0] not in FREE and not _lookup(default_tree(), key)[0]:
            arg = f"++{key}={value}"  # a key of another dataset (or its model) than the default one
        out.append(arg)
    return out

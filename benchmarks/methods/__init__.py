"""The methods a table compares: one YAML file each in this folder, looked up by name.

A method is one of (benchopt style: a small declaration, its hyper-parameters as values):

* a **search**: ``family`` (a loss family of :mod:`lfs.families`, by registry name, with its
  arguments) and ``searcher`` (a searcher of :mod:`lfs.searchers`, with its options);
* a **fixed loss**: ``loss`` (a :mod:`baselines` registry name with its hyper-parameters), one
  model trained with it, the last epoch kept, or the epoch with the best validation reward when
  ``early_stopping`` is set (the honest CE control: the searches' clean validation split);
  ``loss: {ref: dataset.baseline}`` takes the loss from the run's config at that key instead (a
  dataset's own hand-crafted reference, declared in its dataset config; other keys beside ``ref``
  override its hyper-parameters);
* ``teacher: true``: the L2T-DLF-style teacher (``loss: {name: l2t_dlf}``);
* an **evolution** over loss expressions (CSE-Autoloss, AutoLoss-Zero): ``family: {name:
  expression}`` with ``evolution`` (:class:`lfs.evolve.evolution.EvolutionConfig`'s fields),
  ``screening`` (:class:`lfs.evolve.screening.ScreeningConfig`'s, or absent: validity only) and
  ``proxy`` (``stop_invalid``); the budget comes from the ``evolve`` config group
  (:func:`benchmarks.evolution.run_evolution`);
* a **transfer** of a found loss: ``family: {name: expression}`` with ``transfer: {table, dataset,
  method}``: the formula that the row of that evolution (same tier and seed, in
  ``evolve.source_results`` or the run's ``results_dir``) found, retrained from scratch on this
  run's dataset (:func:`benchmarks.evolution.run_transfer`).

Optional ``tune`` makes a *tuned arm*: a grid over config keys (``search.sigma: [0.05, 0.2]``, or
``train.lr: {times: [0.5, 1, 2, 4]}`` for factors of the configured value); the run trains every
point, keeps the one with the best validation reward (the reward's split, never the test split)
and reports its test metrics, the choice, and the cost of choosing it in model-epochs
(:func:`tune_points`; :func:`benchmarks.runner.run_tuned`).

Optional ``B`` pins the number of copies (Random-Softmax trains one model). Arguments the file
leaves out are taken from the ``search`` config group where it has a key of that name
(``search.M``, ``search.sigma``, ``search.invalid_tau``, ...), else the class default; then
``method_args.family.*`` / ``method_args.searcher.*`` / ``method_args.loss.*`` on the command line
override them (:func:`resolve`).

Adding a method is one YAML file here; a new family or searcher is its own file in ``lfs/`` with
its ``@register_*`` line (README, "Add your own search method"). :func:`register` adds one from
Python (an example file does this for a family defined outside the package).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
_KEYS = {"description", "family", "searcher", "loss", "early_stopping", "teacher", "B", "tune", "evolution",
         "screening", "proxy", "transfer"}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    family: dict | None = None  # {"name": <lfs family>, **arguments}
    searcher: dict | None = None  # {"name": <lfs searcher>, **options}
    loss: dict | None = None  # {"name": <baselines entry>, **hyper-parameters}
    early_stopping: bool = False
    teacher: bool = False
    B: int | None = None
    tune: dict | None = None  # {config key: [values] | {"times": [factors]}}: chosen on the validation split
    evolution: dict | None = None  # an evolutionary search (lfs.evolve.evolution.EvolutionConfig's fields)
    screening: dict | None = None  # its screening (ScreeningConfig's fields; None: validity only)
    proxy: dict | None = None  # its proxy training: {"stop_invalid": bool}
    transfer: dict | None = None  # {"table", "dataset", "method"}: retrain the formula that evolution found
    source: str = field(default="", compare=False)

    @property
    def is_search(self) -> bool:
        return self.family is not None and not self.is_evolution

    @property
    def is_evolution(self) -> bool:
        """Runs through :mod:`benchmarks.evolution`: an evolutionary search, or a transfer of its loss."""
        return self.evolution is not None or self.transfer is not None

    def __post_init__(self):
        if self.is_evolution:
            if self.family is None or self.family.get("name") != "expression" or self.searcher or self.loss:
                raise ValueError(f"method {self.name!r}: an evolution names family: {{name: expression}} "
                                 "and no searcher or loss")
            if self.transfer is not None:
                keys = ("table", "dataset", "method")
                if (self.evolution is not None or not isinstance(self.transfer, dict) or set(self.transfer) != set(keys)
                        or not all(isinstance(self.transfer[k], str) for k in keys)):
                    raise ValueError(f"method {self.name!r}: transfer takes {{table, dataset, method}} (names of the "
                                     f"evolution whose loss it retrains) and no evolution block, got {self.transfer!r}")
            return
        if (self.family is None) != (self.searcher is None):
            raise ValueError(f"method {self.name!r}: a search names both a family and a searcher")
        if self.is_search == (self.loss is not None):
            raise ValueError(f"method {self.name!r}: give either family + searcher or loss")
        if self.loss is not None and "ref" in self.loss:
            if not isinstance(self.loss["ref"], str) or not self.loss["ref"]:
                raise ValueError(f"method {self.name!r}: loss.ref must be a dotted config key, got {self.loss['ref']!r}")
        for part in (self.family, self.searcher, None if self.loss and "ref" in self.loss else self.loss):
            if part is not None and not isinstance(part.get("name"), str):
                raise ValueError(f"method {self.name!r}: every part needs a name, got {part!r}")
        if self.tune is not None:
            if not isinstance(self.tune, dict) or not self.tune:
                raise ValueError(f"method {self.name!r}: tune must map config keys to values, got {self.tune!r}")
            for key, spec in self.tune.items():
                values = spec.get("times") if isinstance(spec, dict) else spec
                if not isinstance(values, list) or not values or (isinstance(spec, dict) and set(spec) != {"times"}):
                    raise ValueError(f"method {self.name!r}: tune.{key} must be a list of values or "
                                     f"{{times: [factors]}}, got {spec!r}")


_METHODS: dict[str, Method] = {}
_LOADED = False


def register(method: Method) -> Method:
    """Add a method (the files of this folder are loaded first, so a name cannot shadow one)."""
    _load_builtin()
    if method.name in _METHODS and _METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def load_file(path: Path) -> Method:
    """The method declared in a YAML file (its name is the file's stem)."""
    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"method file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ValueError(f"method file {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_KEYS))}")
    return Method(name=Path(path).stem, source=str(path), **{k: spec.get(k) for k in spec})


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for path in sorted(HERE.glob("*.yaml")):
            register(load_file(path))


def get(name: str) -> Method:
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


# ----------------------------------------------------------------------------- resolution
def _fill(cls, given: dict, search: dict, override: dict, what: str) -> dict:
    """``given`` (the method file's arguments) completed from the search group for the
    constructor's other parameters, then ``override`` (method_args.<what>)."""
    params = inspect.signature(cls).parameters
    out = {k: v for k, v in given.items() if k != "name"}
    for p in params:
        if p not in out and p in search:
            out[p] = search[p]
    for k, v in (override or {}).items():
        if k not in params:
            raise ValueError(f"method_args.{what}.{k}: {given['name']!r} has no such argument; "
                             f"it has: {', '.join(params) or 'none'}")
        out[k] = v
    return out


def resolve(method: Method, cfg: dict) -> dict:
    """The method's parts as constructor arguments for a run's config ``cfg``:
    ``{"family": (name, kwargs), "searcher": (name, kwargs)}`` or ``{"loss": (name, kwargs)}``."""
    from lfs.family import family_class
    from lfs.searcher import searcher_class

    search, override = cfg.get("search", {}), cfg.get("method_args") or {}
    if method.is_evolution:
        return {}  # built by benchmarks.evolution.build_evolution
    if method.is_search:
        fam_cls = family_class(method.family["name"])
        srch_cls = searcher_class(method.searcher["name"])
        return {"family": (method.family["name"], _fill(fam_cls, method.family, search, override.get("family"), "family")),
                "searcher": (method.searcher["name"],
                             _fill(srch_cls, method.searcher, search, override.get("searcher"), "searcher"))}
    import baselines

    loss = method.loss
    if "ref" in loss:  # the loss the run's config holds at that key (e.g. the dataset's own baseline)
        node = cfg
        for part in loss["ref"].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise ValueError(f"method {method.name!r} takes its loss from {loss['ref']}, which this run's config "
                             f"does not set (e.g. {loss['ref']}: {{name: cosface, m: 0.35}} in the dataset's config)")
        loss = {**node, **{k: v for k, v in loss.items() if k != "ref"}}  # the method file's keys override
    entry = baselines.get(loss["name"])
    kwargs = {k: v for k, v in loss.items() if k != "name"}
    for k, v in (override.get("loss") or {}).items():
        kwargs[k] = v
    return {"loss": (entry.name, kwargs)}


def tune_points(method: Method, cfg: dict) -> list[dict]:
    """The grid of a tuned method for ``cfg``: every combination of its ``tune`` values, in the
    file's key order (the first key varies slowest), each as ``{dotted key: value}``; factors
    (``{times: [...]}``) multiply the value ``cfg`` has."""
    import itertools

    keys, axes = [], []
    for key, spec in (method.tune or {}).items():
        node = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"method {method.name!r}: tune key {key!r} is not a config key")
            node = node[part]
        values = [node * f for f in spec["times"]] if isinstance(spec, dict) else list(spec)
        keys.append(key)
        axes.append(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def with_values(cfg: dict, point: dict) -> dict:
    """A copy of ``cfg`` with the dotted keys of ``point`` set."""
    import copy

    out = copy.deepcopy(cfg)
    for key, value in point.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return out

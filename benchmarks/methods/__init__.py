"""The methods a table compares: one YAML file each in this folder, looked up by name.

A method is one of (benchopt style: a small declaration, its hyper-parameters as values):

* a **search**: ``family`` (a loss family of :mod:`lfs.families`, by registry name, with its
  arguments) and ``searcher`` (a searcher of :mod:`lfs.searchers`, with its options);
* a **fixed loss**: ``loss`` (a :mod:`baselines` registry name with its hyper-parameters), one
  model trained with it, the last epoch kept, or the epoch with the best validation reward when
  ``early_stopping`` is set (the honest CE control: the searches' clean validation split);
* ``teacher: true``: the L2T-DLF-style teacher (``loss: {name: l2t_dlf}``).

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
_KEYS = {"description", "family", "searcher", "loss", "early_stopping", "teacher", "B"}


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
    source: str = field(default="", compare=False)

    @property
    def is_search(self) -> bool:
        return self.family is not None

    def __post_init__(self):
        if (self.family is None) != (self.searcher is None):
            raise ValueError(f"method {self.name!r}: a search names both a family and a searcher")
        if self.is_search == (self.loss is not None):
            raise ValueError(f"method {self.name!r}: give either family + searcher or loss")
        for part in (self.family, self.searcher, self.loss):
            if part is not None and not isinstance(part.get("name"), str):
                raise ValueError(f"method {self.name!r}: every part needs a name, got {part!r}")


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
    if method.is_search:
        fam_cls = family_class(method.family["name"])
        srch_cls = searcher_class(method.searcher["name"])
        return {"family": (method.family["name"], _fill(fam_cls, method.family, search, override.get("family"), "family")),
                "searcher": (method.searcher["name"],
                             _fill(srch_cls, method.searcher, search, override.get("searcher"), "searcher"))}
    import baselines

    entry = baselines.get(method.loss["name"])
    kwargs = {k: v for k, v in method.loss.items() if k != "name"}
    for k, v in (override.get("loss") or {}).items():
        kwargs[k] = v
    return {"loss": (entry.name, kwargs)}

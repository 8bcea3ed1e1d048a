"""LFS Bench's library: loss-function search as a loop around your training code.

The loop (:mod:`lfs.search`, AM-LFS's Algorithm 1) is family- and searcher-agnostic:

* loss families (:mod:`lfs.family`, :mod:`lfs.families`): ``piecewise_linear`` (AM-LFS, Li et al.,
  ICCV 2019) and ``search_softmax`` (Wang et al., ICML 2020);
* searchers (:mod:`lfs.searcher`, :mod:`lfs.searchers`): ``gaussian`` (REINFORCE on a Gaussian's
  mean: learn / fixed / random / select) and ``uniform``;
* executors (:mod:`lfs.executors`, :mod:`lfs.auto`, :mod:`lfs.distributed`) that train the B copies;
* evolved losses (:mod:`lfs.evolve`): formulas of primitive operators (CSE-Autoloss, AutoLoss-Zero),
  their screening (LRP, convergence verification, GEC) and an evolutionary search over them.

No Hydra and nothing from ``benchmarks`` is imported here: drop it into any training loop.
"""
from .heads import AMLFSLoss, CosineClassifier, HeadLoss
from .loss import am_lfs_loss, log_tau, target_logit_cross_entropy
from .search_space import (
    identity_theta,
    split_theta,
    t_derivative,
    t_transform,
    tau_derivative,
    tau_transform,
    theta_dim,
)

__version__ = "0.2.0"
from .executors import SequentialExecutor, VectorizedExecutor
from .executor_registry import make_executor
from .auto import AutoExecutor, choose_executor
from .family import LossFamily, ParametricFamily, list_families, make_family, register_family
from .searcher import Searcher, list_searchers, make_searcher, register_searcher
from .policy import GaussianPolicy, normalize_rewards
from .search import LossSearch, SearchConfig, SearchFailed, SearchResult, search
from .task import CallbackTask, SupervisedTask, Task, TrainState

"""AM-LFS: AutoML for Loss Function Search (Li et al., ICCV 2019) as a library.

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

__version__ = "0.1.0"
from .executors import SequentialExecutor, VectorizedExecutor, make_executor
from .auto import AutoExecutor, choose_executor
from .policy import GaussianPolicy, normalize_rewards
from .search import LossSearch, SearchConfig, SearchFailed, SearchResult, search
from .task import CallbackTask, SupervisedTask, Task, TrainState

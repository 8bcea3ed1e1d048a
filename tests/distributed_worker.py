"""Run by tests/test_distributed.py under torchrun (or srun): one AM-LFS search with the
distributed executor; rank 0 writes what the search did as JSON to argv[1]."""
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lfs  # noqa: E402
from lfs.distributed import DistributedExecutor, init_process_group, is_writer  # noqa: E402
from lfs.search import LossSearch, SearchConfig  # noqa: E402
from test_search import make_task, params_of  # noqa: E402

out, kw = sys.argv[1], json.loads(sys.argv[2])
checkpoint = kw.pop("checkpoint", None)
local = kw.pop("local", "sequential")
torch.set_num_threads(1)
rank, world = init_process_group("gloo")
search = LossSearch(make_task(), SearchConfig(**kw), executor=DistributedExecutor(local), checkpoint=checkpoint)
result = search.run()
params = params_of(result.state)
if is_writer():
    Path(out).write_text(json.dumps({
        "world": world, "resumed_from": search.resumed_from,
        "history": [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in result.history],
        "mu": result.policy["mu"].tolist(), "params": params.tolist(), "reward": result.reward}))
torch.distributed.barrier()  # both ranks done with the group (and rank 0 with its file) before teardown
torch.distributed.destroy_process_group()

"""AM-LFS on your own model in a few lines: a small MLP on a generated 10-class problem.

Runs in about a minute on 2 CPU cores. Compares AM-LFS (``learn``) with the ``select`` control
(the same B copies trained with cross entropy, best kept each epoch) on the same seeds.

    python examples/quickstart.py [--epochs 15] [--B 8] [--executor vectorized]
"""
import argparse
import time

import torch
import torch.nn as nn

import lfs


def make_data(seed: int = 0, n: int = 3000, d: int = 20, classes: int = 10, noise: float = 0.2):
    """Gaussian class clusters with 20 % symmetric label noise on the training part only."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 1.2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    n_test = n // 3
    y_train = y[n_test:].clone()
    flip = torch.rand(len(y_train), generator=g) < noise
    y_train[flip] = (y_train[flip] + torch.randint(1, classes, (int(flip.sum()),), generator=g)) % classes
    return (x[n_test:], y_train), (x[:n_test], y[:n_test])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--executor", default="vectorized", choices=["sequential", "vectorized"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    (x, y), (x_test, y_test) = make_data(args.seed)
    n_val = len(x) // 5  # validation split held out from the (noisy) training set
    train, val = (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])

    def model_fn():
        return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), lfs.CosineClassifier(64, 10, normalize="both", s=10.0))

    def loss_fn(output, target, theta):
        cos, scale = output
        return lfs.am_lfs_loss(cos, target, theta, scale)

    task = lfs.SupervisedTask(model_fn, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), loss_fn,
                              train, val, batch_size=64)
    for mode in ("select", "learn"):
        start = time.perf_counter()

        def progress(r, mode=mode):
            print(f"  [{mode}] epoch {r.epoch + 1:3d}/{args.epochs}  best val acc {r.best_reward:.3f}  "
                  f"failed {sum(r.failed)}/{args.B}  {r.seconds:.2f}s", flush=True)

        search = lfs.LossSearch(task, lfs.SearchConfig(epochs=args.epochs, B=args.B, mode=mode,
                                                       executor=args.executor, seed=args.seed), on_epoch=progress)
        result = search.run()
        model = result.state.model.eval()
        with torch.no_grad():
            acc = float((lfs.task.default_predict(model(x_test)).argmax(1) == y_test).float().mean())
        print(f"{mode}: test accuracy {acc:.3f} (val {result.reward:.3f}) in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()

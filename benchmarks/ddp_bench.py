"""DDP with 2 processes against 1 process: training time and test accuracy, side by side; DDP
also with its gradients sent as float16 (PyTorch's ``fp16_compress_hook``).

    .venv/bin/python benchmarks/ddp_bench.py --data ../shared/data/fashion-mnist   # make bench-ddp
    .venv/bin/python benchmarks/ddp_bench.py --data ... --epochs 1 --seeds 42 --limit-batches 150

Both arms run notebook 05's script (``python -m dltrack.distributed.train``) with the same
epochs, seed and global batch (64: 32 per process under DDP), against a throw-away MLflow store,
with the CPU split fairly: the single process gets 2 threads, each DDP process 1
(``OMP_NUM_THREADS``). Per seed the arms run one after the other, in rotating order. The ``ddp-fp16`` arm is the ``ddp``
arm with the script's ``--ddp-comm-hook fp16``: DDP registers PyTorch's
``default_hooks.fp16_compress_hook`` (the script's ``CompressGradients`` callback registers it on
the DDP model: Lightning's ``DDPStrategy(ddp_comm_hook=...)`` ignores a hook on the CPU), which
casts each gradient bucket to float16 before the all-reduce and back after it, halving the bytes
exchanged.
The time is the run's duration in MLflow (fit, validation and test; process start-up and imports
excluded), without checkpoint models (``--checkpoints none``). The accuracy is the run's
``test_acc`` (10,000 test images). Prints each pair, the throughput ratio (single time / DDP
time, mean over seeds, for each DDP arm), the accuracy mean and standard deviation of each arm, the targets, and the
load average; writes benchmarks/results/ddp_bench.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_results  # benchmarks/_results.py

#: DDP throughput at least this fraction of one process's; DDP accuracy this close (points).
TARGET_RATIO = 0.9
TARGET_ACCURACY_PP = 0.3


def _script(args: argparse.Namespace, seed: int, experiment: str, batch_size: int,
            limit_batches: int | None) -> list[str]:  # fmt: skip
    """The training script's arguments (``python -m dltrack.distributed.train ...``), without
    checkpoint models."""
    script = ["-m", "dltrack.distributed.train", "--data", str(args.data), "--epochs",
              str(args.epochs), "--seed", str(seed), "--batch-size", str(batch_size),
              "--experiment", experiment, "--checkpoints", "none"]  # fmt: skip
    if limit_batches:
        script += ["--limit-batches", str(limit_batches)]
    return script


def _only_run(uri: str, experiment: str):
    """The one run of ``experiment`` in the store at ``uri``."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def _seconds(run) -> float:
    """The run's duration in MLflow: fit, validation and test, without start-up."""
    return (run.info.end_time - run.info.start_time) / 1000


def _batches_per_epoch(args: argparse.Namespace) -> int:
    """Global batches in one epoch of the training set (``--limit-batches`` applied)."""
    import math

    from dltrack.models.lightning_cnn import FashionMNISTDataModule

    datamodule = FashionMNISTDataModule(str(args.data))
    datamodule.setup()
    batches = math.ceil(len(datamodule.train_set) / args.batch_size)
    return min(batches, args.limit_batches) if args.limit_batches else batches


def train(arm: str, seed: int, args: argparse.Namespace, store: Path) -> tuple[float, float]:
    """Run one training of ``arm`` ("single", "ddp" or "ddp-fp16"); return (seconds, test
    accuracy).

    Raises:
        subprocess.CalledProcessError: the training failed.
    """
    uri = f"sqlite:///{store / f'{arm}-{seed}.db'}"
    experiment = f"ddp-bench-{arm}"
    script = _script(args, seed, experiment, args.batch_size, args.limit_batches)
    if arm == "ddp-fp16":
        script += ["--ddp-comm-hook", "fp16"]
    if arm.startswith("ddp"):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", *script]  # fmt: skip
        threads = "1"
    else:
        command, threads = [sys.executable, *script], "2"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": threads}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run(command, env=env, check=True, capture_output=True)
    run = _only_run(uri, experiment)
    return _seconds(run), run.data.metrics["test_acc"]


def _exchange(rank: int, port: int, numel: int, steps: int, out: str) -> None:
    """One of 2 gloo processes (1 thread each): all-reduce a float32 tensor of ``numel``
    elements ``steps`` times, as DDP does with the gradients after each batch; rank 0 writes
    the seconds to ``out``."""
    import time

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    gradients = torch.zeros(numel)
    dist.all_reduce(gradients)  # connect before timing
    dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        dist.all_reduce(gradients)
    dist.barrier()
    if rank == 0:
        Path(out).write_text(str(time.perf_counter() - started))
    dist.destroy_process_group()


def gradient_exchange_seconds(args: argparse.Namespace) -> tuple[float, int, int]:
    """What DDP's gradient exchange alone costs in this benchmark: 2 gloo processes all-reduce
    a tensor the size of the CNN's parameters once per optimizer step of a DDP arm (the
    epochs' batches of 32 per process), with no training beside it. Returns (seconds, number
    of parameters, steps)."""
    import socket

    import torch.multiprocessing as mp

    from dltrack.models.lightning_cnn import FashionMNISTCNN

    numel = sum(p.numel() for p in FashionMNISTCNN().parameters() if p.requires_grad)
    steps = args.epochs * _batches_per_epoch(args)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "seconds")
        mp.spawn(_exchange, args=(port, numel, steps, out), nprocs=2, join=True)
        return float(Path(out).read_text()), numel, steps


def independent_pair_seconds(seed: int, args: argparse.Namespace, store: Path) -> list[float]:
    """DDP's compute without its exchange: 2 single processes (1 thread each) at once, each
    training as many batches as a DDP process (half the global batch, all the global batches
    of an epoch) with its own store and no gradients exchanged. Returns each run's seconds (as
    :func:`train`).

    Raises:
        subprocess.CalledProcessError: a training failed.
    """
    script = _script(args, seed, "ddp-bench-pair", args.batch_size // 2, _batches_per_epoch(args))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    uris = [f"sqlite:///{store / f'pair-{rank}.db'}" for rank in (0, 1)]
    processes = [
        subprocess.Popen([sys.executable, *script], env={**env, "MLFLOW_TRACKING_URI": uri},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for uri in uris
    ]  # fmt: skip
    for process in processes:
        if process.wait():
            raise subprocess.CalledProcessError(process.returncode, process.args)
    return [_seconds(_only_run(uri, "ddp-bench-pair")) for uri in uris]


def summary(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the full data set")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch of both arms")
    parser.add_argument(
        "--limit-batches",
        type=int,
        default=None,
        help="train and validate on this many global batches (quick look)",
    )
    parser.add_argument(
        "--arms",
        default="single,ddp,ddp-fp16",
        help="comma-separated, of single, ddp, ddp-fp16 (single is needed)",
    )
    parser.add_argument("--skip-breakdown", action="store_true",
                        help="skip the measurements of where DDP's time goes")  # fmt: skip
    args = parser.parse_args()
    args.data = args.data.resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = os.getloadavg()[0]
    arms = args.arms.split(",")
    if "single" not in arms or not set(arms) <= {"single", "ddp", "ddp-fp16"}:
        parser.error(f"--arms must include single, of single, ddp, ddp-fp16; got {args.arms!r}")
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    accuracies: dict[str, list[float]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="dltrack-ddp-bench-") as tmp:
        for turn, seed in enumerate(seeds):
            order = arms[turn % len(arms) :] + arms[: turn % len(arms)]  # rotated
            for arm in order:
                seconds, accuracy = train(arm, seed, args, Path(tmp))
                times[arm].append(seconds)
                accuracies[arm].append(accuracy)
                print(f"seed {seed} {arm:8}: {seconds:6.1f} s, test accuracy {accuracy:.4f}")
        # where DDP's time goes, once: its compute alone, then its gradient exchange alone
        pair = None
        if "ddp" in arms and not args.skip_breakdown:
            pair = independent_pair_seconds(seeds[0], args, Path(tmp))
    if pair is not None:
        exchange, numel, steps = gradient_exchange_seconds(args)
    ddp_arms = [arm for arm in arms if arm != "single"]
    ratio = {
        arm: summary([one / ddp for one, ddp in zip(times["single"], times[arm], strict=True)])
        for arm in ddp_arms
    }
    accuracy = {arm: summary(values) for arm, values in accuracies.items()}
    gap_pp = {arm: 100 * (accuracy[arm]["mean"] - accuracy["single"]["mean"]) for arm in ddp_arms}
    load_after = os.getloadavg()[0]
    limit = f", {args.limit_batches} batches per epoch" if args.limit_batches else ""
    print(f"\n{args.epochs} epochs{limit}, global batch {args.batch_size}, seeds {seeds}")
    for arm in ddp_arms:
        met = ratio[arm]["mean"] >= TARGET_RATIO
        print(f"{arm} throughput / single process: {ratio[arm]['mean']:.2f}x "
              f"(sd {ratio[arm]['stdev']:.2f}), target >= {TARGET_RATIO}x: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
    if "ddp-fp16" in ddp_arms and "ddp" in ddp_arms:
        fp16 = [ddp / half for ddp, half in zip(times["ddp"], times["ddp-fp16"], strict=True)]
        print(f"ddp-fp16 throughput / ddp: {statistics.mean(fp16):.2f}x")
    if pair is not None:
        gap_seconds = statistics.mean(times["ddp"]) - statistics.mean(times["single"])
        print(f"DDP's compute alone (2 processes of 1 thread, half the images each, no exchange, "
              f"seed {seeds[0]}): {pair[0]:.1f} s and {pair[1]:.1f} s")  # fmt: skip
        print(f"where DDP's extra {gap_seconds:.1f} s go: all-reducing {numel:,} float32 "
              f"gradients {steps} times (one per step) between 2 gloo processes takes "
              f"{exchange:.1f} s alone")  # fmt: skip
    for arm in arms:
        print(f"test accuracy {arm:8}: mean {accuracy[arm]['mean']:.2%}, "
              f"sd {accuracy[arm]['stdev']:.2%}")  # fmt: skip
    for arm in ddp_arms:
        met = abs(gap_pp[arm]) <= TARGET_ACCURACY_PP
        print(f"accuracy gap {arm} - single: {gap_pp[arm]:+.2f} pp, target within "
              f"{TARGET_ACCURACY_PP} pp: {'met' if met else 'NOT met'}")  # fmt: skip
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after, "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    write_results("ddp_bench", {
        "epochs": args.epochs, "limit_batches": args.limit_batches,
        "global_batch_size": args.batch_size, "seeds": seeds, "arms": arms,
        "seconds": times, "ratio": ratio, "test_accuracy": accuracy, "gap_pp": gap_pp,
        "independent_pair_seconds": pair,
        "gradient_exchange": None if pair is None else
        {"seconds": exchange, "parameters": numel, "steps": steps},
        "load_average": [load_before, load_after], "cpus": os.cpu_count(),
    })  # fmt: skip


if __name__ == "__main__":
    main()

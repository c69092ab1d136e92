"""Training speed of the method vs the INN variants vs the cINN (SPEC "Beyond the paper").

A benchmark, not a test: times full training iterations of every Gaussian-mixture model in one
process and prints milliseconds per iteration, the ratio to ours, and the achieved GFLOP/s as a
share of a plain float32 matmul measured in the same run. The paper's size is the default; every
other setting (INN weights, optimizers, variants) comes from the config file.

    python benchmarks/training_speed.py                       # paper size: batch 1600, 8 x 512
    python benchmarks/training_speed.py --device cuda --iterations 50 --out speed.csv
    python benchmarks/training_speed.py --batch-size 256 --hidden 64 --iterations 5   # quick
    python benchmarks/training_speed.py --networks reference  # one of gmm.networks only

The pipeline's rule ``benchmark_gmm_speed`` runs the same library function
(:func:`replicate.experiments.gmm.stages.benchmark_training_speed`) with the configured sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from replicate.experiments.gmm.settings import model_names
from replicate.experiments.gmm.stages import benchmark_training_speed
from replicate.runtime import setup_logging, use_threads

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--batch-size", type=int, default=1600)
    parser.add_argument("--n-blocks", type=int, default=None, help="default: each network's")
    parser.add_argument("--hidden", type=int, default=None, help="default: each network's")
    parser.add_argument("--networks", nargs="+", default=None, help="default: every gmm.networks")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--models", nargs="+", default=None, help="default: every GMM model")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (optional)")
    args = parser.parse_args(argv)

    setup_logging(None)
    gmm = yaml.safe_load(args.config.read_text())["gmm"]
    gmm["batch_size"] = args.batch_size
    sizes = {k: v for k, v in (("n_blocks", args.n_blocks), ("hidden", args.hidden)) if v}
    unknown = sorted(set(args.networks or []) - set(gmm["networks"]))
    if unknown:
        parser.error(f"--networks {unknown}: not in gmm.networks {sorted(gmm['networks'])}")
    gmm["networks"] = {
        name: {**settings, **sizes}
        for name, settings in gmm["networks"].items()
        if args.networks is None or name in args.networks
    }
    use_threads(args.threads)
    benchmark_training_speed(
        gmm,
        args.models or model_names(gmm),
        args.device,
        args.out,
        args.out.with_suffix(".md") if args.out else None,
        iterations=args.iterations,
        warmup=args.warmup,
        rounds=args.rounds,
        matmul_size=args.matmul_size,
    )


if __name__ == "__main__":
    main()

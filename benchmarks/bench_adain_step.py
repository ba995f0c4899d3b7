"""Seconds per step of ``instyle train-adain`` at its real settings (batch 8, 256 px crops), and the
hours that makes for a run.

Each case builds the product's own trainer (``AdaINTrainer`` on the photos and paintings of
shared/data/train, split as a run splits them) and times ``--warmup + --steps`` of its steps: crops,
the encoder on photos and paintings, AdaIN, the decoder, the encoder on its output, the loss, the
backward and the Adam step. Reported: the median step, images/s, and the hours ``--iterations``
steps would take at that rate (evaluations and checkpoints excluded: about 2% more at the
defaults). Each row carries the mean 1-minute load average over its steps: on a shared CPU that
is what the other processes took.

    python benchmarks/bench_adain_step.py                            # CPU: --dtype auto, then fp32
    python benchmarks/bench_adain_step.py --device cuda --warmup 5 --steps 50 --dtypes auto
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

# ../shared/data beside the repository, or $INSTYLE_SHARED_DATA (as the tests find it)
DATA = Path(os.environ.get("INSTYLE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "train"


def time_case(args: argparse.Namespace, dtype: str, folder: str) -> dict:
    from instyle.engine.device import synchronize
    from instyle.engine.training.adain import AdaINConfig, AdaINTrainer

    config = AdaINConfig(
        content=str(args.content), styles=str(args.styles), output=os.path.join(folder, f"{dtype}.safetensors"),
        iterations=args.warmup + args.steps, batch_size=args.batch_size, image_size=args.image_size, device=args.device,
        dtype=dtype,
    )  # fmt: skip
    start = time.perf_counter()
    trainer = AdaINTrainer(config)
    trainer.setup()
    setup = time.perf_counter() - start
    times, loads = [], []
    for i in range(args.warmup + args.steps):
        synchronize(trainer.devices.device)
        start = time.perf_counter()
        trainer.step()
        synchronize(trainer.devices.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
    step = statistics.median(times)
    return {
        **provenance(trainer.devices.device), "dtype": trainer.devices.precision, "batch_size": args.batch_size,
        "image_size": args.image_size, "setup_s": round(setup, 1), "step_s": round(step, 3),
        "images_per_s": round(args.batch_size / step, 2), "iterations": args.iterations,
        "hours": round(step * args.iterations / 3600, 2), "load_avg": round(statistics.mean(loads), 2),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", type=Path, default=DATA / "photos")
    parser.add_argument("--styles", type=Path, default=DATA / "paintings")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20000, help="the run length the hours are for")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", nargs="+", default=["auto", "fp32"])
    parser.add_argument("--out", type=Path, default=RESULTS / "adain_step.csv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for dtype in args.dtypes:
            row = time_case(args, dtype, folder)
            print(row, flush=True)
            append_csv(args.out, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the Ray engine's fixed start goes and how its actors scale (docs/ray.md, "Measured").

1. Ray Data's first execution in a driver: a trivial pipeline (one no-op task per block) run three
   times in one driver; the first run pays Ray Data's set-up, the others show its steady cost.
2. The actors alone: 48 photos decoded here, then stylized in this process with one torch thread,
   by one Stylizer actor and by two (each one thread), fed directly without Ray Data.

    python benchmarks/probe_ray_startup.py [--photos ../shared/data/train/photos]
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def ray_data_first_runs() -> None:
    import ray.data

    for k in range(3):
        start = time.perf_counter()
        ds = ray.data.from_items([{"a": i} for i in range(64)], override_num_blocks=8)
        first = None
        for _ in ds.map_batches(lambda b: b, batch_size=8, num_cpus=0).iter_batches(batch_size=None):
            first = first or time.perf_counter()
        print(f"Ray Data run {k}: first batch after {first - start:.2f} s")


def actor_rates(photos: Path, out: str) -> None:
    import ray
    import torch

    from instyle.engine.batch import model_spec
    from instyle.engine.batch.sources import read_batch
    from instyle.engine.batch.workers import Stylizer

    spec, files = model_spec("starry_night"), sorted(glob.glob(str(photos / "*")))[:48]
    batches = []
    for i in range(0, len(files), 8):
        part = files[i : i + 8]
        rows = {"input": np.array(part, dtype=object), "path": np.array(part, dtype=object), "fs": -np.ones(len(part), np.int64),
                "output": np.array([f"{out}/{i + j}.png" for j in range(len(part))], dtype=object)}  # fmt: skip
        batches.append(read_batch(rows, [], None))
    torch.set_num_threads(1)
    rate = lambda start: len(files) / (time.perf_counter() - start)  # noqa: E731
    local, start = Stylizer(spec, {"dtype": "auto"}, 1), time.perf_counter()
    for batch in batches:
        local(batch)
    print(f"in this process, 1 thread: {rate(start):.1f} images/s")
    actor = ray.remote(num_cpus=1)(Stylizer)
    actors = [actor.remote(spec, {"dtype": "auto"}, 1) for _ in range(2)]
    ray.get([a.ready.remote() for a in actors])
    refs = [ray.put(b) for b in batches]
    for count in (1, 2):
        start = time.perf_counter()
        ray.get([actors[k % count].__call__.remote(ref) for k, ref in enumerate(refs)])
        print(f"{count} actor(s), 1 thread each: {rate(start):.1f} images/s")


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=SHARED / "train" / "photos")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ray_data_first_runs()
        with tempfile.TemporaryDirectory() as out:
            actor_rates(args.photos, out)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""Images per second through the Ray engine (``instyle stylize --engine ray``) against plain
``instyle stylize`` on the same photos, in the same run (issue #21, part 4).

Cases, each on ``--images`` photos (default 200 of ``shared/data/train/photos``) with ``--model``:

- ``plain``: what ``instyle stylize`` runs: the model loaded once, ``stylize_files`` one image at a
  time in this process, torch's default threads;
- ``plain-1-thread``: the same with one torch thread (what each CPU actor of the engine uses);
- ``ray``: ``instyle.stylize_dataset`` on a local cluster of ``--cpus`` CPUs started here (its start
  is ``cluster_start_s``, not counted in the job), the model checked on a worker, decoding tasks and
  the default actor pool (one actor per CPU, one thread each), the manifest. ``first_result_s`` is the
  time to the first image; ``steady_images_per_s`` the rate after it.

``overhead`` is plain's images/s over the row's, minus 1 (the target: at most 0.2 at 2 CPUs). Every
row carries the 1-minute load average before and after it: the CPU may be shared.

    python benchmarks/bench_ray.py                      # 200 photos, 2 CPUs
    python benchmarks/bench_ray.py --images 50 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

SHARED = Path(os.environ.get("INSTYLE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def photos(count: int) -> list[Path]:
    from instyle.engine.image import iter_image_files

    found = list(iter_image_files([SHARED / "train" / "photos"]))
    if len(found) < count:
        raise SystemExit(f"need {count} photos in {SHARED / 'train' / 'photos'}, found {len(found)}")
    return found[:count]


def run_plain(sources: list[Path], out: Path, model_name: str, dtype: str, threads: int | None) -> dict:
    from instyle.engine.inference.stylize import load_model, stylize_files

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        model = load_model(model_name)
        results = list(stylize_files(model, sources, out, dtype=dtype))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    assert not any(r.error for r in results), [r.error for r in results if r.error][:3]
    return {"seconds": seconds, "threads": threads or previous}


def run_ray(sources: list[Path], out: Path, model_name: str, dtype: str, batch_size: int) -> dict:
    from instyle.engine.batch import stylize_dataset

    start, first = time.perf_counter(), []

    def on_result(result) -> None:
        if not first:
            first.append(time.perf_counter() - start)

    summary = stylize_dataset(sources, out, model_name, dtype=dtype, batch_size=batch_size, on_result=on_result)
    seconds = time.perf_counter() - start
    assert summary.written == len(sources), summary
    steady = (len(sources) - 1) / (seconds - first[0]) if seconds > first[0] else float("nan")
    return {"seconds": seconds, "first_result_s": first[0], "steady_images_per_s": steady, "threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="starry_night")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="each case this often, interleaved")
    parser.add_argument("--csv", type=Path, default=RESULTS / "ray_cpu.csv")
    args = parser.parse_args()

    import ray

    sources = photos(args.images)
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    cluster_start = time.perf_counter() - start
    base = {**provenance(torch.device("cpu")), "ray": ray.__version__, "cpus": args.cpus, "model": args.model,
            "dtype": args.dtype, "images": len(sources), "batch_size": args.batch_size}  # fmt: skip
    cases = {
        "plain": lambda out: run_plain(sources, out, args.model, args.dtype, None),
        "plain-1-thread": lambda out: run_plain(sources, out, args.model, args.dtype, 1),
        "ray": lambda out: run_ray(sources, out, args.model, args.dtype, args.batch_size),
    }
    rows = []
    try:
        for repeat in range(args.repeats):
            for case, run in cases.items():
                out = Path(tempfile.mkdtemp(prefix=f"bench_ray_{case}_"))
                load_before = os.getloadavg()[0]
                measured = run(out)
                shutil.rmtree(out)
                row = {**base, "case": case, "repeat": repeat, **measured, "load1_before": round(load_before, 2),
                       "load1_after": round(os.getloadavg()[0], 2)}  # fmt: skip
                row["images_per_s"] = len(sources) / row["seconds"]
                if case == "ray":
                    row["cluster_start_s"] = cluster_start
                rows.append(row)
                print(f"{case:15s} {row['images_per_s']:6.2f} images/s ({row['seconds']:.1f} s, load {load_before:.1f})", flush=True)
    finally:
        ray.shutdown()
    for row in rows:
        plain = next(r for r in rows if r["case"] == "plain" and r["repeat"] == row["repeat"])
        row["overhead"] = plain["images_per_s"] / row["images_per_s"] - 1
        row.update({k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
    append_csv(args.csv, rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()

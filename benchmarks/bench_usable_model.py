"""Time to a usable style model: held-out loss of a training run against a 20,000-step reference.

"Usable" (the stylization issue's target): the total perceptual loss on held-out photos is within
10 % of what the same configuration reaches after 20,000 iterations. The script runs
``instyle train`` twice with ``--eval-content`` (the held-out photos, by default
``../shared/data/content``, which the default training set does not contain):

- ``reference``: the configuration with ``--iterations 20000`` (checkpointed; rerun the script
  and it resumes, since the reference takes hours on a CPU);
- ``candidate``: the same configuration with its own ``--iterations`` (default: TrainConfig's).

It then reports the candidate's final held-out total against the reference's, the first
evaluation at which each run got within 10 % of the reference's final value, with the training
seconds it had taken (``heldout.csv``'s ``train_seconds``: time in training steps; run it
alone, since other processes on the cores inflate it), and appends a row to
``benchmarks/results/usable_model.csv``.

    python benchmarks/bench_usable_model.py --style ../shared/data/styles/starry_night.jpg
    python benchmarks/bench_usable_model.py --style starry.jpg --device cuda   # the GPU target: 2 minutes
    python benchmarks/bench_usable_model.py --style starry.jpg -- --width 0.375   # extra train flags
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_heldout(log_dir: Path) -> list[dict[str, float]]:
    path = log_dir / "heldout.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_train(name: str, args, iterations: int | None, out: Path) -> list[dict[str, float]]:
    log_dir = out / f"{name}.train"
    model = out / f"{name}.safetensors"
    if model.exists():
        return read_heldout(log_dir)
    cmd = [sys.executable, "-m", "instyle", "train", "--style", args.style, "-o", str(model), "--log-dir", str(log_dir),
           "--eval-content", args.eval_content, "--eval-every", str(args.eval_every), "--device", args.device,
           "--checkpoint-every", "250", "--sample-every", "0", *args.train_args]  # fmt: skip
    if iterations is not None:
        cmd += ["--iterations", str(iterations)]
    if (log_dir / "checkpoint.pt").exists():
        cmd.append("--resume")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return read_heldout(log_dir)


def first_within(rows: list[dict[str, float]], limit: float) -> dict[str, float] | None:
    return next((row for row in rows if row["total"] <= limit), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", required=True, help="style image or bundled style name")
    p.add_argument("--eval-content", default=str(ROOT.parent / "shared" / "data" / "content"))
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--iterations", type=int, default=None, help="the candidate's (default: TrainConfig's)")
    p.add_argument("--reference-iterations", type=int, default=20000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "usable_model")
    p.add_argument("train_args", nargs="*", help="extra `instyle train` flags for both runs, after --")
    args = p.parse_args(argv)
    if not Path(args.eval_content).is_dir():
        p.error(f"--eval-content {args.eval_content}: not a folder")
    args.out.mkdir(parents=True, exist_ok=True)

    candidate = run_train("candidate", args, args.iterations, args.out)
    reference = run_train("reference", args, args.reference_iterations, args.out)
    if not reference or reference[-1]["step"] < args.reference_iterations:
        print("the reference run is not finished; rerun the script to resume it")
        return 1
    final = reference[-1]["total"]
    limit = 1.1 * final
    rows = []
    for name, history in (("candidate", candidate), ("reference", reference)):
        hit = first_within(history, limit)
        rows.append({
            **provenance(torch.device("cuda" if args.device == "cuda" else "cpu")),
            "threads": os.environ.get("OMP_NUM_THREADS", ""), "style": args.style,
            "train_args": " ".join(args.train_args), "run": name, "iterations": int(history[-1]["step"]),
            "final_heldout_total": round(history[-1]["total"], 4), "reference_final": round(final, 4),
            "ratio_to_reference": round(history[-1]["total"] / final, 4),
            "first_within_10pct_step": int(hit["step"]) if hit else "",
            "first_within_10pct_seconds": round(hit["train_seconds"], 1) if hit else "",
            "total_train_seconds": round(history[-1]["train_seconds"], 1),
        })  # fmt: skip
        print(f"{name}: {rows[-1]['iterations']} steps, held-out total {history[-1]['total']:.4g} "
              f"({rows[-1]['ratio_to_reference']:.3f} of the {args.reference_iterations}-step reference); within 10 % first at step "
              f"{rows[-1]['first_within_10pct_step'] or '-'} after {rows[-1]['first_within_10pct_seconds'] or '-'} s")  # fmt: skip
    path = append_csv(RESULTS / "usable_model.csv", rows)
    print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

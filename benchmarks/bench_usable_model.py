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

A new style for a multi-style model (issue #19): with ``--base MULTI_MODEL`` the runs are

- ``base``: ``instyle train --base MULTI_MODEL --style STYLE`` (only the new style's instance-norm
  rows train, the convolutions frozen);
- ``scratch``: the same style trained from scratch with the defaults, side by side;

both judged against the reference as above, evaluated every ``--eval-every`` steps, and with
``--stop-when-usable`` ended (SIGTERM: a checkpoint, exit 143) at their first evaluation within 10 %.
``--reference-heldout CSV`` takes the reference's final held-out total from a stored ``heldout.csv``
(the 20,000-step run takes hours on a CPU) instead of running it:

    python benchmarks/bench_usable_model.py --style ../shared/data/styles/starry_night.jpg \
        --base multi.safetensors --eval-every 25 --stop-when-usable \
        --reference-heldout benchmarks/results/usable_model_vgg19_2026-11-26/reference_20000_heldout.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_heldout(log_dir: Path, name: str = "heldout.csv") -> list[dict[str, float]]:
    path = log_dir / name
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_train(
    name: str, args, iterations: int | None, out: Path, extra: tuple[str, ...] = (), stop_below: float | None = None
) -> list[dict[str, float]]:
    """``instyle train`` of ``args.style`` (plus ``extra`` flags) as run ``name``; with ``stop_below``, ended
    at its first evaluation whose held-out total is at most that."""
    log_dir = out / f"{name}.train"
    model = out / f"{name}.safetensors"
    if model.exists() or (stop_below is not None and first_within(read_heldout(log_dir), stop_below)):
        return read_heldout(log_dir)
    cmd = [sys.executable, "-m", "instyle", "train", "--style", args.style, "-o", str(model), "--log-dir", str(log_dir),
           "--eval-content", args.eval_content, "--eval-every", str(args.eval_every), "--device", args.device,
           "--checkpoint-every", "250", "--sample-every", "0", *extra, *args.train_args]  # fmt: skip
    if iterations is not None:
        cmd += ["--iterations", str(iterations)]
    if (log_dir / "checkpoint.pt").exists():
        cmd.append("--resume")
    print("$", " ".join(cmd), flush=True)
    if stop_below is None:
        subprocess.run(cmd, check=True)
    else:
        run_until(cmd, log_dir, stop_below)
    return read_heldout(log_dir)


def run_until(cmd: list[str], log_dir: Path, limit: float) -> None:
    """Run ``cmd`` until its held-out log has a total of at most ``limit``, then end it as Ctrl-C would
    (the step finishes and a checkpoint is written)."""
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        time.sleep(1.0)
        if first_within(read_heldout(log_dir), limit):
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            return
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def first_within(rows: list[dict[str, float]], limit: float) -> dict[str, float] | None:
    return next((row for row in rows if row["total"] <= limit), None)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", required=True, help="style image or bundled style name")
    p.add_argument("--eval-content", default=str(ROOT.parent / "shared" / "data" / "content"))
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--iterations", type=int, default=None, help="the candidate's (default: TrainConfig's)")
    p.add_argument("--reference-iterations", type=int, default=20000)
    p.add_argument("--reference-heldout", type=Path, default=None,
                   help="a finished reference run's heldout.csv, instead of running the reference")  # fmt: skip
    p.add_argument("--base", default=None, help="a multi-style model: time adding --style to it (and from scratch)")
    p.add_argument("--stop-when-usable", action="store_true", help="end each run at its first usable evaluation")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "usable_model")
    p.add_argument("train_args", nargs="*", help="extra `instyle train` flags for both runs, after --")
    args = p.parse_args(argv)
    if not Path(args.eval_content).is_dir():
        p.error(f"--eval-content {args.eval_content}: not a folder")
    if args.reference_heldout is not None and not args.reference_heldout.is_file():
        p.error(f"--reference-heldout {args.reference_heldout}: not a file")
    return args


def reference_run(args) -> list[dict[str, float]]:
    """The reference's held-out log: stored (``--reference-heldout``) or run (and resumed) here."""
    if args.reference_heldout is not None:
        return read_heldout(args.reference_heldout.parent, args.reference_heldout.name)
    return run_train("reference", args, args.reference_iterations, args.out)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reference = reference_run(args) if args.stop_when_usable or args.reference_heldout else []
    stop = 1.1 * reference[-1]["total"] if args.stop_when_usable and reference else None
    if args.base is None:
        runs = [("candidate", run_train("candidate", args, args.iterations, args.out, stop_below=stop))]
    else:
        base = ("--base", args.base)
        runs = [("base", run_train("base", args, args.iterations, args.out, base, stop)),
                ("scratch", run_train("scratch", args, args.iterations, args.out, stop_below=stop))]  # fmt: skip
    reference = reference or reference_run(args)
    if not reference or reference[-1]["step"] < args.reference_iterations:
        print("the reference run is not finished; rerun the script to resume it")
        return 1
    # a stored reference is not this run's: judged by, not reported again
    return report(args, runs + ([] if args.reference_heldout else [("reference", reference)]), reference[-1]["total"])


def report(args, runs: list[tuple[str, list[dict[str, float]]]], final: float) -> int:
    """Each run against the reference's ``final`` held-out total: printed, and appended to usable_model.csv."""
    limit = 1.1 * final
    rows = []
    for name, history in runs:
        hit = first_within(history, limit)
        train_args = " ".join([*(["--base", args.base] if name == "base" else []), *args.train_args])
        rows.append({
            **provenance(torch.device("cuda" if args.device == "cuda" else "cpu")),
            "threads": os.environ.get("OMP_NUM_THREADS", ""), "style": args.style,
            "train_args": train_args, "run": name, "iterations": int(history[-1]["step"]),
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

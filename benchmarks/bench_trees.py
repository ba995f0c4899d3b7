"""Two source trees of instyle side by side: StyleModel.stylize at 1024 px and train() steps at the
defaults, through the public API only (``instyle.load_model``, ``instyle.train``), so that any two
layouts of the package compare. Each round runs every tree once, in its own process, alternating.

    python benchmarks/bench_trees.py BEFORE/src AFTER/src --style ../shared/data/styles/starry_night.jpg

Rows (one per tree and round) go to ``results/trees.csv`` with device, versions and date; the final
training loss shows whether the arithmetic changed (it should be equal to the bit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

ONE_SIDE = r"""
import json, statistics, sys, tempfile, time
import torch
import instyle

size, steps, style = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = instyle.load_model("starry_night")
x = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
times = []
for i in range(6):
    start = time.perf_counter()
    model.stylize(x, device="cpu")
    if i:
        times.append(time.perf_counter() - start)
with tempfile.TemporaryDirectory() as tmp:
    config = instyle.TrainConfig(style=style, output=f"{tmp}/m.safetensors", iterations=steps,
                                 checkpoint_every=10**6, sample_every=0, device="cpu")
    result = instyle.train(config, handle_signals=False)
rate = statistics.median(h["images_per_s"] for h in result.history[4:]) / config.batch_size
print(json.dumps({"stylize_s": statistics.median(times), "train_steps_per_s": rate, "final_total": result.losses["total"]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", help="src folders of the trees to compare")
    p.add_argument("--style", required=True, help="the painting train() learns")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=16, help="training steps (the rate is the median after the 4th)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "trees.csv")
    args = p.parse_args()
    import torch

    base = provenance(torch.device("cpu"))
    rows = []
    for round_ in range(args.rounds):
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            out = subprocess.run([sys.executable, "-c", ONE_SIDE, str(args.size), str(args.steps), args.style],
                                 env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
            measured = json.loads(out.strip().splitlines()[-1])
            row = {**base, "tree": tree, "round": round_, "size": args.size, **measured}
            print(json.dumps(row), flush=True)
            rows.append(row)
    append_csv(args.out, rows)


if __name__ == "__main__":
    main()

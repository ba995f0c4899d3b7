"""The GPU speed work of the stylization issue, second round: CUDA-graph training steps, the Gram
matrix's GEMMs, the loss network's layout, and where a 1024 px stylization spends its time.

The first round (gpu_variants.py, H100, 2026-11-26) found a training step of 25-35 ms wall for 17 ms
of GPU time (Python-bound), a fifth of that GPU time in one fp32 Gram GEMM, and 13 % in cuDNN's
NCHW <-> NHWC conversions around bf16 convolutions. Parts (``--parts``):

- ``check``: the same 24 steps trained eagerly and with ``cuda_graph`` (the default), same seed:
  the loss curves must agree; the TF32 Gram of bf16 features against the fp32 one.
- ``gram``: forward + backward of the Gram matrices of VGG relu1_1..relu4_1 features of a batch of
  256 px crops: fp32 (before), TF32 on NCHW features, TF32 on channels_last features split over
  positions (the product), each in the same run.
- ``train``: images/s of ``instyle.engine.training.train`` for CUDA graph on/off, loss network NCHW/channels_last,
  batch sizes ``--batches``; then a profile of a few eager steps in the product layout.
- ``stylize``: a profile of the bundled architecture's 1024 px forward (fp32 NCHW), its time eagerly,
  replayed as a CUDA graph, and with TF32 convolutions off.

Rows go to results/gpu_speed.csv (device, versions, date); profiles to results/*_profile_*.txt.

    python benchmarks/gpu_speed.py --style starry.jpg --parts check gram train stylize
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, layout_override, median_seconds, profile_training, provenance  # noqa: E402


DEVICE = "cuda"  # --device cpu: a quick run of the script itself on a machine without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, repeats: int) -> float:
    return median_seconds(fn, repeats)


def profile_table(fn, title: str, steps: int, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        sync()
    averages = prof.key_averages()
    text = [title]
    for key in ("self_device_time_total", "self_cuda_time_total", "cpu_time_total"):
        try:
            text += [f"\n## sorted by {key}", averages.table(sort_by=key, row_limit=30, max_name_column_width=70)]
        except Exception as exc:  # the key's name differs across torch versions
            text += [f"\n## sorted by {key}: {exc}"]
    path.write_text("\n".join(text))
    print("\n".join(text[:2]), flush=True)


def train_config(args, tmp: str, **overrides):
    from instyle.engine.training import TrainConfig

    options = dict(style=args.style, content=args.content, output=str(Path(tmp) / "m.safetensors"), batch_size=8,
                   device=DEVICE, checkpoint_every=10**9, sample_every=0,
                   vgg_weights="default")  # fmt: skip  # the VGG-16 loss the target is stated for ($INSTYLE_VGG_WEIGHTS)
    options.update(overrides)
    return TrainConfig(**options)


def check(args, base: dict) -> list[dict]:
    from instyle.engine.losses import gram_matrix
    from instyle.engine.training import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        curves = {}
        for graph in (False, True):
            result = train(train_config(args, tmp, iterations=24, cuda_graph=graph), handle_signals=False)
            curves[graph] = [h["total"] for h in result.history]
        worst = max(abs(a - b) / abs(a) for a, b in zip(curves[False], curves[True]))
        print("eager   ", " ".join(f"{v:.4g}" for v in curves[False][::4]))
        print("graphed ", " ".join(f"{v:.4g}" for v in curves[True][::4]))
        print(f"graph vs eager: largest relative loss difference over 24 steps {worst:.3g}", flush=True)
        rows.append({**base, "part": "check", "case": "graph-vs-eager-loss", "value": round(worst, 6)})
    torch.manual_seed(0)
    for c, size in ((64, 256), (128, 128), (256, 64), (512, 32)):
        f = torch.relu(torch.randn(8, c, size, size, device=DEVICE)).bfloat16()
        for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
            x = f.clone(memory_format=fmt).requires_grad_()
            x32 = f.float().requires_grad_()
            g = gram_matrix(x)
            ref = torch.bmm(x32.flatten(2), x32.flatten(2).transpose(1, 2)) / (c * size * size)
            w = torch.randn_like(ref)
            (g * w).sum().backward()
            (ref * w).sum().backward()
            err = ((g - ref).abs().max() / ref.abs().max()).item()
            gerr = ((x.grad.float() - x32.grad).abs().max() / x32.grad.abs().max()).item()
            print(f"gram {c}x{size}x{size} {layout}: rel err {err:.2e}, grad rel err {gerr:.2e}", flush=True)
            rows.append({**base, "part": "check", "case": f"gram-{c}-{layout}", "value": f"{err:.3g}/{gerr:.3g}"})
    return rows


def gram(args, base: dict) -> list[dict]:
    import instyle.engine.losses as losses
    import instyle.engine.losses.gram as gram_module

    def fp32_gram(features):  # before: upcast, NCHW matrix, one fp32 GEMM (no TF32)
        n, c, h, w = features.shape
        f = features.float().reshape(n, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)

    rows = []
    split = gram_module.GRAM_SPLIT_POSITIONS
    for c, size in ((64, 256), (128, 128), (256, 64), (512, 32)):
        f = torch.relu(torch.randn(args.batch, c, size, size, device=DEVICE)).bfloat16()
        cases = [("fp32-nchw", fp32_gram, torch.contiguous_format, split),
                 ("tf32-nchw", losses.gram_matrix, torch.contiguous_format, split),
                 ("tf32-cl-nosplit", losses.gram_matrix, torch.channels_last, 1 << 40),
                 ("tf32-cl-split", losses.gram_matrix, torch.channels_last, split),
                 ("tf32-cl-split1024", losses.gram_matrix, torch.channels_last, 1024)]  # fmt: skip
        base_ms = None
        for label, fn, fmt, positions in cases:
            x = f.clone(memory_format=fmt).requires_grad_()
            weight = torch.randn(c, c, device=DEVICE)
            gram_module.GRAM_SPLIT_POSITIONS = positions

            def run(fn=fn, x=x, weight=weight):
                (fn(x) * weight).sum().backward()

            try:
                ms = time_fn(run, 20) * 1e3
            finally:
                gram_module.GRAM_SPLIT_POSITIONS = split
            base_ms = base_ms or ms
            print(f"gram fwd+bwd {args.batch}x{c}x{size}x{size} {label:<18} {ms:8.3f} ms  x{base_ms / ms:.2f}", flush=True)
            rows.append({**base, "part": "gram", "case": label, "size": size, "channels": c, "batch_size": args.batch,
                         "median_ms": round(ms, 4), "speedup": round(base_ms / ms, 2)})  # fmt: skip
    return rows


def train_speed(args, base: dict) -> list[dict]:
    """images/s for each of ``--train-cases``: BATCH[:OPTION...] with options eager (no CUDA graph),
    loss-nchw (loss network NCHW), gen-cl (generator channels_last), compile (torch.compile)."""
    from instyle.engine.training import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.train_cases:
            batch, *options = case.split(":")
            batch = int(batch)
            config = train_config(args, tmp, iterations=args.warmup + args.steps, batch_size=batch,
                                  cuda_graph="eager" not in options, compile="compile" in options)  # fmt: skip
            layouts = layout_override(
                generator=torch.channels_last if "gen-cl" in options else None,
                loss=torch.contiguous_format if "loss-nchw" in options else None,
            )
            with layouts:
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    result = train(config, handle_signals=False)
                seconds = time.perf_counter() - start
                for w in caught:
                    if "CUDA graph" in str(w.message):
                        options.append("graph-failed")
                        print(f"   {w.message}", flush=True)
            rate = statistics.median(h["images_per_s"] for h in result.history[args.warmup :])
            label = "+".join(options) or "defaults"
            print(f"train batch {batch:>3} {label:<16}: {rate:8.1f} img/s {batch / rate * 1e3:7.2f} ms/step "
                  f"({seconds:.1f} s for {config.iterations} steps with set-up)", flush=True)  # fmt: skip
            rows.append({**base, "part": "train", "case": label, "size": config.image_size,
                         "batch_size": batch, "width": config.width, "num_residual": config.num_residual,
                         "median_ms": round(batch / rate * 1e3, 4), "images_per_s": round(rate, 2)})  # fmt: skip
        if not args.profile:
            return rows

        # GPU time of an eager step in the product layout, by kernel
        config = train_config(args, tmp, iterations=args.warmup + 6, cuda_graph=False)
        title = (f"# {base['device']} torch {base['torch']} {base['date']}: 6 eager training steps, batch 8, "
                 f"loss network channels_last, TF32 Gram")  # fmt: skip
        profile_training(config, args.warmup, title, RESULTS / f"train_profile2_{slug(base)}.txt")
    return rows


def slug(base: dict) -> str:
    return f"{base['device'].split()[1] if ' ' in base['device'] else base['device']}_{base['date']}".replace("/", "-")


def stylize_speed(args, base: dict) -> list[dict]:
    import instyle
    from instyle.engine.models import TransformerNet

    rows = []
    model = TransformerNet(width=0.375, num_residual=3).to(DEVICE).eval()
    bundled = instyle.load_model("starry_night")
    model.load_state_dict(bundled.generator.state_dict())
    x = torch.rand(1, 3, args.size, args.size, device=DEVICE)

    def forward():
        with torch.no_grad():
            return model(x)

    def product():
        return bundled.stylize(x, device=DEVICE)

    def product_eager():
        bundled.cuda_graphs = False
        try:
            return bundled.stylize(x, device=DEVICE)
        finally:
            bundled.cuda_graphs = True

    graphed_out = [product() for _ in range(3)][-1]
    diff = (graphed_out - product_eager()).abs().max().item()
    print(f"stylize {args.size}: product with CUDA graph vs without, max abs diff {diff:.3g}", flush=True)
    rows.append({**base, "part": "check", "case": "stylize-graph-vs-eager", "size": args.size, "value": diff})

    eager = time_fn(forward, args.repeats)
    product_s = time_fn(product, args.repeats)
    product_eager_s = time_fn(product_eager, args.repeats)
    graphed = float("nan")
    with torch.no_grad():  # the whole forward as one CUDA graph
        if DEVICE != "cuda":
            return rows
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        graphed = time_fn(graph.replay, args.repeats)
    conv_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    no_tf32 = time_fn(forward, args.repeats)
    torch.backends.cudnn.allow_tf32 = conv_tf32
    torch.backends.cudnn.benchmark = True
    bench = time_fn(forward, args.repeats)
    torch.backends.cudnn.benchmark = False
    for label, seconds in (("eager", eager), ("product-stylize", product_s), ("product-no-graph", product_eager_s),
                           ("cuda-graph", graphed),
                           ("no-tf32-conv", no_tf32), ("cudnn-benchmark", bench)):  # fmt: skip
        print(f"stylize {args.size} bundled arch fp32 {label:<16} {seconds * 1e3:8.3f} ms", flush=True)
        rows.append({**base, "part": "stylize", "case": label, "size": args.size, "width": 0.375, "num_residual": 3,
                     "batch_size": 1, "median_ms": round(seconds * 1e3, 4)})  # fmt: skip
    profile_table(forward, f"# {base['device']} torch {base['torch']} {base['date']}: 10 forwards, 1024 px, "
                  "bundled architecture, fp32 NCHW", 10, RESULTS / f"stylize_profile_{slug(base)}.txt")  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", required=True)
    p.add_argument("--content", default=None)
    p.add_argument("--parts", nargs="*", default=["check", "gram", "train", "stylize"])
    p.add_argument("--batch", type=int, default=8, help="batch of the Gram benchmark")
    p.add_argument("--train-cases", nargs="*", default=["8", "8:eager", "8:loss-nchw", "16", "32"])
    p.add_argument("--profile", action="store_true", help="profile eager training steps after the train cases")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--size", type=int, default=1024, help="stylize size")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_speed.py needs a CUDA device", file=sys.stderr)
        return 2
    base = provenance(torch.device(DEVICE))
    parts = {"check": check, "gram": gram, "train": train_speed, "stylize": stylize_speed}
    for part in args.parts:
        rows = parts[part](args, base)
        append_csv(RESULTS / "gpu_speed.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

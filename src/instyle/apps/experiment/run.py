"""``run_in_vs_bn``: the experiment as a sequence of stages, each adding its part to the report."""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.apps.experiment import measures
from instyle.apps.experiment.config import HELD_OUT, NORMS, ExperimentConfig, ExperimentError, validate
from instyle.apps.experiment.figure import write_figure
from instyle.apps.experiment.report import markdown, portable_command, portable_path, verdicts
from instyle.engine.device import describe_device, resolve_device
from instyle.engine.fileio import write_atomic
from instyle.engine.image import ImageError, default_content_images, iter_image_files, load_image, save_image
from instyle.engine.training.config import DEFAULT_LR
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import ModelFileError
from instyle.engine.targets import (
    ATTACH_TOOL, StyleSource, StyleTargetsError, apply_targets, compute_style_targets, default_style, resolve_style,
    settle_loss,
)  # fmt: skip
from instyle.engine.training import train

__all__ = ["run_in_vs_bn"]

# ---------------------------------------------------------------------------- the style and the loss network


def _resolve_style(config: ExperimentConfig) -> tuple[ExperimentConfig, StyleSource, list[str]]:
    """The style (``config.style``, or the first bundled style with style targets), the config with
    that style, its loss network settled and, for stored targets, their style size; notes for the report."""
    spec = config.style or default_style()
    if not spec:
        raise ExperimentError(
            "style: none given and no bundled style carries style targets; give a style image (a painting) or a "
            f"model file with style targets (attach them with `{ATTACH_TOOL} MODEL --style PAINTING`)"
        )
    try:
        source = resolve_style(spec)
    except (StyleTargetsError, ModelFileError, ImageError) as error:
        raise ExperimentError(f"style: {error}") from error
    notes = []
    train_config = dataclasses.replace(config.train, loss=settle_loss(config.train.loss, source))
    if source.targets is not None:
        recorded = source.targets.style_size
        if train_config.style_size != recorded:
            notes.append(
                f"style size {recorded} px, the size the stored style targets were computed at "
                f"(the configuration's {train_config.style_size} px does not apply to stored targets)"
            )
        train_config = dataclasses.replace(train_config, style_size=recorded)
    return dataclasses.replace(config, style=spec, train=train_config), source, notes


# ---------------------------------------------------------------------------- setting up


@dataclass
class _Setup:
    """What every stage reads: the settled config, the style, the photos, the loss."""

    config: ExperimentConfig
    source: StyleSource
    notes: list[str]
    device: torch.device
    output: Path
    train_named: list[tuple[str, Tensor]]
    eval_names: list[str]
    eval_images: list[Tensor]
    crops: Tensor
    loss_fn: PerceptualLoss


def _load_eval_dir(eval_dir: str) -> tuple[list[str], list[Tensor]]:
    folder = Path(eval_dir)
    if not folder.is_dir():
        raise ExperimentError(f"eval_dir {eval_dir}: not a folder")
    paths = list(iter_image_files([folder], recursive=True))
    if not paths:
        raise ExperimentError(f"eval_dir {eval_dir}: no images found")
    return [p.stem for p in paths], [load_image(p) for p in paths]


def _photos(config: ExperimentConfig) -> tuple[list[tuple[str, Tensor]], list[str], list[Tensor]]:
    """Training photos (named), and the held-out photos' names and images."""
    named = default_content_images()
    if config.eval_dir is not None:
        return named, *_load_eval_dir(config.eval_dir)
    train_named = [(n, img) for n, img in named if n not in HELD_OUT]
    held = [(n, img) for n, img in named if n in HELD_OUT]
    return train_named, [n for n, _ in held], [img for _, img in held]


def _loss(config: ExperimentConfig, source: StyleSource, extractor) -> PerceptualLoss:
    """The training loss with the training's style targets (stored, or computed once in fp32 as
    train() does), set before any training so that a bad fit fails fast."""
    loss_fn = PerceptualLoss.from_config(config.train.loss, extractor)
    style_targets = source.targets or compute_style_targets(
        source.image, style_size=config.train.style_size, layers=config.train.loss.style_layers,
        extractor=loss_fn.extractor, style_name=source.name, style_sha256=source.style_sha256,
    )  # fmt: skip
    try:
        apply_targets(loss_fn, style_targets, what="style")
    except StyleTargetsError as error:
        raise ExperimentError(str(error)) from error
    return loss_fn


def _prepare(config: ExperimentConfig, extractor, progress: Callable[[str], None]) -> _Setup:
    validate(config)
    config, source, notes = _resolve_style(config)
    device = resolve_device(config.device)
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ExperimentError(f"output {output}: exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    progress("loading content photos")
    train_named, eval_names, eval_images = _photos(config)
    crops = measures.eval_crops(eval_images, config)
    loss_fn = _loss(config, source, extractor)
    return _Setup(config, source, notes, device, output, train_named, eval_names, eval_images, crops, loss_fn)


def _report_head(setup: _Setup, clock: dict) -> dict:
    config = setup.config
    recorded = config.to_json()
    recorded.update({key: portable_path(recorded[key]) for key in ("style", "output", "eval_dir")})
    style = setup.source.to_json()
    if style.get("path"):
        style["path"] = portable_path(style["path"])
    return {
        "experiment": "in-vs-bn",
        "meta": {
            "command": portable_command(config.command),
            "date_utc": clock["date"],
            "device": describe_device(setup.device),
            "instyle_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "load_average_start": clock["load_start"],
            "notes": setup.notes,
        },
        "config": recorded,
        "style": style,
        "data": {
            "train_photos": [n for n, _ in setup.train_named],
            "eval_images": setup.eval_names,
            "eval_crops": int(setup.crops.shape[0]),
            "eval_crop_size": config.train.image_size,
        },
    }


# ---------------------------------------------------------------------------- the stages


def _write_folder(images: list[Tensor], folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        save_image(image, folder / f"{i:03d}_{names[i] if names else 'crop'}.png")
    return folder


def _train(setup: _Setup, norm: str, content: Path, folder: Path, iterations: int):
    """One generator: the experiment's training with this norm, content, step count and folder."""
    config = setup.config
    run = dataclasses.replace(
        config.train, style=config.style, content=str(content), output=str(folder / "model.safetensors"),
        log_dir=str(folder), arch="transformer", norm=norm, iterations=iterations, seed=config.seed,
        device=config.device, checkpoint_every=iterations, sample_every=0,
    )  # fmt: skip
    return train(run, handle_signals=False, extractor=setup.loss_fn.extractor)


def _train_generators(setup: _Setup, work: Path, report: dict, progress) -> dict[str, torch.nn.Module]:
    """Claim 1's generators, one per norm, trained on the same photos and batches."""
    photos = _write_folder([img for _, img in setup.train_named], work / "photos", [n for n, _ in setup.train_named])
    iterations = setup.config.train.iterations
    models, training = {}, {}
    for norm in NORMS:
        progress(f"training the {norm}-norm generator ({iterations} steps)")
        result = _train(setup, norm, photos, work / f"main_{norm}", iterations)
        models[norm] = result.model.float().eval()
        training[norm] = measures.training_summary(result)
    report["training"] = training
    return models


def _measure_generators(setup: _Setup, models: dict, report: dict, progress) -> None:
    """Claims 1-3 on the held-out crops: losses, the contrast series, batch dependence."""
    config = setup.config
    progress("evaluating on held-out crops")
    setup.loss_fn.to(setup.device)
    x = setup.crops.to(setup.device)
    report["eval_loss"] = measures.eval_losses(models, setup.loss_fn, x)
    progress("contrast series")
    report["contrast"] = measures.contrast_series(models, x, config.contrast_factors)
    progress("batch dependence")
    report["batch_dependence"] = {
        "batch_sizes": list(config.batch_sizes),
        **{norm: measures.batch_dependence(models[norm], x, config.batch_sizes) for norm in NORMS},
    }


def _set_size_study(setup: _Setup, work: Path, progress) -> dict:
    """Claim 4: the same steps on 1, 4, 16, 64 ... fixed crops; held-out loss of each."""
    config = setup.config
    iterations = config.set_size_iterations or config.train.iterations
    photos = [img for _, img in setup.train_named]
    pools = {
        count: _write_folder(measures.crop_pool(photos, count, config, config.seed + 17), work / f"pool_{count}")
        for count in config.set_sizes
    }
    x = setup.crops.to(setup.device)
    study: dict = {"iterations": iterations, "sizes": list(config.set_sizes)}
    for norm in config.set_size_norms:
        rows = {}
        for count, folder in pools.items():
            progress(f"training-set size {count} ({norm} norm, {iterations} steps)")
            result = _train(setup, norm, folder, work / f"size_{norm}_{count}", iterations)
            rows[str(count)] = {
                "eval": measures.loss_values(setup.loss_fn, measures.forward(result.model.float().eval(), x), x),
                "train_final_total": measures.training_summary(result)["final_total_mean_last_10pct"],
                "seconds": result.seconds,
            }
        study[norm] = rows
    return study


def _finish(setup: _Setup, report: dict, clock: dict) -> None:
    meta = report["meta"]
    meta["load_average_end"] = measures.load_average()
    meta["wall_seconds"] = time.perf_counter() - clock["started"]
    cpu_after = measures.cpu_seconds()
    meta["cpu_seconds"] = None if clock["cpu_start"] is None or cpu_after is None else cpu_after - clock["cpu_start"]
    report["claims"] = verdicts(report)
    write_atomic(setup.output / "report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(setup.output / "report.md", markdown(report))


def run_in_vs_bn(
    config: ExperimentConfig,
    *,
    extractor: torch.nn.Module | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the IN-vs-BN experiment and write report.md, report.json and figure.png into
    ``config.output``; return the report. ``extractor`` replaces the VGG (tests)."""
    clock = {
        "started": time.perf_counter(),
        "cpu_start": measures.cpu_seconds(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_start": measures.load_average(),
    }
    progress = on_progress or (lambda message: None)
    # the learning rate the runs will use, recorded as such (TrainConfig leaves it to the run: None)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=config.train.lr or DEFAULT_LR))
    setup = _prepare(config, extractor, progress)
    config = setup.config
    report = _report_head(setup, clock)
    with tempfile.TemporaryDirectory(prefix="instyle-in-vs-bn-") as tmp:
        work = Path(tmp)
        models = _train_generators(setup, work, report, progress)
        _measure_generators(setup, models, report, progress)
        report["set_size"] = _set_size_study(setup, work, progress)
        progress(f"speed: generator and {config.optimize_iterations} optimisation iterations at {config.speed_size} px")
        extractor = setup.loss_fn.extractor
        report["speed"] = measures.speed(config, models, setup.eval_images[0], setup.source, extractor, setup.device)
        progress("figure")
        photo, name = setup.eval_images[0], setup.eval_names[0]
        write_figure(config, models, photo, name, setup.source, setup.output / "figure.png", setup.device)
    _finish(setup, report, clock)
    return report

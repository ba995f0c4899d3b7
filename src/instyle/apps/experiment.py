"""Experiments that check the seed's claims with numbers: ``instyle experiment in-vs-bn``.

``run_in_vs_bn(ExperimentConfig(...))`` trains one TransformerNet with instance norm and one
with batch norm (same seed, data, schedule and loss), measures them on held-out photos and
writes ``report.md``, ``report.json`` and ``figure.png`` into ``config.output``. It returns the
report as a dict and prints nothing (pass ``on_progress`` for stage messages).

The five claims (Ulyanov et al. 2016/2017, as the seed states them) and what is measured:

1. IN instead of BN in every generator layer stylizes better: held-out content, style and
   total loss in eval mode, with the same loss the generators were trained on.
2. The output should not depend on the content image's contrast: ``x_k = mean + k (x - mean)``
   (per image and channel, clamped to [0, 1]) for each ``k``; mean |G(x_k) - G(x_1)|.
3. IN behaves the same in training and at test time: one image alone and inside batches of
   other images, in train and eval modes; train-mode against eval-mode output.
4. About 16 content images, trained briefly, are enough: held-out loss after the same number of
   steps on 1, 4, 16, 64 content images (fixed augmented crops of the training photos).
5. The generator is orders of magnitude faster than the Gatys optimisation: time per image
   against :func:`instyle.optimize` at the same size and device.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.fileio import write_atomic
from instyle.engine.image import ImageError, default_content_images, iter_image_files, load_image, resize_long_side, save_image
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import ModelFileError
from instyle.engine.optimize import OptimizeConfig, optimize
from instyle.engine.device import resolve_device
from instyle.engine.targets import (
    ATTACH_TOOL, StyleSource, StyleTargetsError, apply_targets, compute_style_targets, default_style, resolve_style,
    adopt_target_weights,
)  # fmt: skip
from instyle.engine.training import TrainConfig, corner_crops, train

__all__ = ["ExperimentConfig", "ExperimentError", "run_in_vs_bn"]

NORMS = ("instance", "batch")
# Two ordinary photographs of scikit-image's eight are held back for evaluation.
HELD_OUT = ("chelsea", "motorcycle")


class ExperimentError(ValueError):
    """A bad experiment setting or input (names the option or file)."""


@dataclass
class ExperimentConfig:
    """Settings of ``instyle experiment in-vs-bn``; the defaults are the full run (a GPU's work),
    :meth:`quick` the small one for a CPU."""

    # a style image, a bundled style name or a model file with style targets; "": the first bundled
    # style that carries style targets (the painting is not shipped; its statistics are)
    style: str = ""
    output: str = "out/in_vs_bn"
    eval_dir: str | None = None  # held-out photos; None: HELD_OUT from the default content set
    # the generator and its training (both norms get exactly these)
    width: float = 0.5
    num_residual: int = 5
    iterations: int = 2000
    batch_size: int = 4
    image_size: int = 256  # training crops; evaluation crops are this size too, at the same scale
    style_size: int = 384
    lr: float = 1e-3
    # Explicit here, not TrainConfig's defaults (which are being retuned).
    content_weight: float = 1.0
    style_weight: float = 20.0
    tv_weight: float = 10.0
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    dtype: str = "auto"  # training; every measurement runs in fp32
    # measurements
    eval_crops_per_image: int = 5
    eval_max_images: int = 16
    contrast_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    batch_sizes: tuple[int, ...] = (2, 4, 8)
    set_sizes: tuple[int, ...] = (1, 4, 16, 64)
    set_size_iterations: int | None = None  # None: ``iterations``
    set_size_norms: tuple[str, ...] = NORMS
    speed_size: int = 512
    optimize_iterations: int = 500  # OptimizeConfig's standard; fewer are extrapolated to it
    speed_repeats: int = 20
    figure_size: int = 512
    seed: int = 0
    device: str = "auto"
    vgg_weights: str | None = None
    command: str | None = None  # recorded at the top of report.md
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides) -> ExperimentConfig:
        """Small enough for a 2-core CPU in under 20 minutes: 64 px crops, a quarter-width
        generator, a few hundred steps, IN alone in the training-set-size study."""
        preset = dict(
            width=0.25, iterations=200, image_size=64, style_size=96, set_size_iterations=120,
            set_size_norms=("instance",), speed_size=256, optimize_iterations=10, speed_repeats=5,
            figure_size=192, quick=True,
        )  # fmt: skip
        return cls(**{**preset, **overrides})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _resolve_style(config: ExperimentConfig) -> tuple[ExperimentConfig, StyleSource, list[str]]:
    """The style (``config.style``, or the first bundled style with style targets), the config with
    that style and, for stored targets, their style size, and notes for the report."""
    spec = config.style or default_style()
    if not spec:
        raise ExperimentError(
            "no --style given and no bundled style carries style targets; pass --style IMG (a painting) or a "
            f"model file with style targets (attach them with `{ATTACH_TOOL} MODEL --style PAINTING`)"
        )
    try:
        source = resolve_style(spec)
    except (StyleTargetsError, ModelFileError, ImageError) as error:
        raise ExperimentError(f"--style: {error}") from error
    notes = []
    config = adopt_target_weights(config, source)
    if source.targets is not None:
        recorded = source.targets.style_size
        if config.style_size != recorded:
            notes.append(
                f"style size {recorded} px, the size the stored style targets were computed at "
                f"(the configuration's {config.style_size} px does not apply to stored targets)"
            )
        config = dataclasses.replace(config, style=spec, style_size=recorded)
    else:
        config = dataclasses.replace(config, style=spec)
    return config, source, notes


# ---------------------------------------------------------------------------- data


def _resize_short_side(image: Tensor, short: int) -> Tensor:
    h, w = image.shape[-2:]
    return resize_long_side(image, max(short, round(max(h, w) * short / min(h, w))))


def _eval_crops(images: list[Tensor], config: ExperimentConfig) -> Tensor:
    """Held-out crops at the training scale (short side 1.5x the crop, as the trainer resizes):
    (N, 3, image_size, image_size)."""
    scale = round(1.5 * config.image_size)
    crops = []
    for image in images[: config.eval_max_images]:
        crops += corner_crops(_resize_short_side(image, scale), config.image_size, config.eval_crops_per_image)
    return torch.stack(crops)


def _crop_pool(photos: list[Tensor], count: int, config: ExperimentConfig, seed: int) -> list[Tensor]:
    """``count`` fixed content images for the training-set-size study: square crops (1.5x the
    training crop, so the trainer keeps their scale) of the photos taken in turn, each at a random
    scale (the photo's short side 1 to 2.5 crops), position and flip."""
    side = round(1.5 * config.image_size)
    generator = torch.Generator().manual_seed(seed)
    pool = []
    for i in range(count):
        scale = 1.0 + 1.5 * float(torch.rand((), generator=generator))
        photo = _resize_short_side(photos[i % len(photos)], round(side * scale))
        h, w = photo.shape[-2:]
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = photo[:, top : top + side, left : left + side]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        pool.append(crop)
    return pool


def _write_folder(images: list[Tensor], folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        save_image(image, folder / f"{i:03d}_{names[i] if names else 'crop'}.png")
    return folder


def _load_eval_dir(eval_dir: str) -> tuple[list[str], list[Tensor]]:
    folder = Path(eval_dir)
    if not folder.is_dir():
        raise ExperimentError(f"--eval {eval_dir}: not a folder")
    paths = list(iter_image_files([folder], recursive=True))
    if not paths:
        raise ExperimentError(f"--eval {eval_dir}: no images found")
    return [p.stem for p in paths], [load_image(p) for p in paths]


# ---------------------------------------------------------------------------- measurements


def _forward(model: torch.nn.Module, x: Tensor, train_mode: bool = False) -> Tensor:
    """The generator's fp32 output; train mode runs on a copy so BN's running statistics stay put."""
    with torch.no_grad():
        if train_mode:
            return copy.deepcopy(model).train()(x).float()
        model.eval()
        return model(x).float()


def _loss_values(loss_fn: PerceptualLoss, output: Tensor, content: Tensor) -> dict[str, float]:
    with torch.no_grad():
        total, terms = loss_fn(output, content)
    return {"content": float(terms["content"]), "style": float(terms["style"]), "tv": float(terms["tv"]), "total": float(total)}


def _contrast(model: torch.nn.Module, crops: Tensor, factors: tuple[float, ...]) -> dict[str, float]:
    """Mean |G(x_k) - G(x_1)| per factor k, eval mode."""
    mean = crops.mean(dim=(2, 3), keepdim=True)  # (N, 3, 1, 1)
    outputs = {k: _forward(model, (mean + k * (crops - mean)).clamp(0, 1)) for k in factors}
    return {str(k): float((output - outputs[1.0]).abs().mean()) for k, output in outputs.items()}


def _batch_dependence(model: torch.nn.Module, crops: Tensor, batch_sizes: tuple[int, ...]) -> dict:
    """Each crop alone against the same crop inside a batch with the next B - 1 crops (cyclic),
    in eval and train modes; and train-mode against eval-mode output of the crop alone."""
    n = crops.shape[0]
    result: dict = {}
    alone_by_mode = {}
    for mode in ("eval", "train"):
        runner = copy.deepcopy(model).train(mode == "train")
        with torch.no_grad():
            alone = torch.cat([runner(crops[i : i + 1]).float() for i in range(n)])
            alone_by_mode[mode] = alone
            rows = {}
            for b in batch_sizes:
                diffs = []
                for i in range(n):
                    batch = crops[[(i + j) % n for j in range(b)]]
                    diffs.append((runner(batch)[0].float() - alone[i]).abs())
                stacked = torch.stack(diffs)
                rows[str(b)] = {"mean": float(stacked.mean()), "max": float(stacked.max())}
        result[mode] = rows
    gap = (alone_by_mode["train"] - alone_by_mode["eval"]).abs()
    result["train_vs_eval_alone"] = {"mean": float(gap.mean()), "max": float(gap.max())}
    return result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_generator(model: torch.nn.Module, image: Tensor, repeats: int, device: torch.device) -> float:
    """Median seconds per forward pass of one image (eval mode, fp32), after two warm-up runs."""
    model.eval()
    x = image.unsqueeze(0).to(device)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            _synchronize(device)
            start = time.perf_counter()
            model(x)
            _synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} threads"


def _cpu_seconds() -> float | None:
    """User + system CPU time of this process, all threads."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    except (ImportError, OSError):
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------- the experiment


def run_in_vs_bn(
    config: ExperimentConfig,
    *,
    extractor: torch.nn.Module | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the IN-vs-BN experiment and write report.md, report.json and figure.png into
    ``config.output``; return the report. ``extractor`` replaces the VGG (tests)."""
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = _load_average()
    progress = on_progress or (lambda message: None)
    _validate(config)
    config, source, notes = _resolve_style(config)
    device = resolve_device(config.device)
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ExperimentError(f"-o {output}: exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)

    progress("loading content photos")
    named = default_content_images()
    if config.eval_dir is None:
        train_named = [(n, img) for n, img in named if n not in HELD_OUT]
        eval_names = [n for n, _ in named if n in HELD_OUT]
        eval_images = [img for n, img in named if n in HELD_OUT]
    else:
        train_named = named
        eval_names, eval_images = _load_eval_dir(config.eval_dir)
    crops = _eval_crops(eval_images, config)
    loss_fn = PerceptualLoss.from_config(config, extractor)
    extractor = loss_fn.extractor  # shared by every training run below
    # The evaluation targets are the training's: stored, or computed once in fp32 as train() does.
    style_targets = source.targets or compute_style_targets(
        source.image, style_size=config.style_size, layers=config.style_layers, extractor=extractor,
        style_name=source.name, style_sha256=source.style_sha256,
    )  # fmt: skip
    try:
        apply_targets(loss_fn, style_targets, what="--style")  # before any training: a bad fit fails fast
    except StyleTargetsError as error:
        raise ExperimentError(str(error)) from error

    report: dict = {
        "experiment": "in-vs-bn",
        "meta": {
            "command": config.command,
            "date_utc": date,
            "device": _describe_device(device),
            "instyle_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "load_average_start": load_before,
            "notes": notes,
        },
        "config": config.to_json(),
        "style": source.to_json(),
        "data": {
            "train_photos": [n for n, _ in train_named],
            "eval_images": eval_names,
            "eval_crops": int(crops.shape[0]),
            "eval_crop_size": config.image_size,
        },
    }

    with tempfile.TemporaryDirectory(prefix="instyle-in-vs-bn-") as tmp:
        work = Path(tmp)
        photos_dir = _write_folder([img for _, img in train_named], work / "photos", [n for n, _ in train_named])

        # -- 1: the two generators, then their held-out losses ---------------------------------------
        models: dict[str, torch.nn.Module] = {}
        training: dict = {}
        for norm in NORMS:
            progress(f"training the {norm}-norm generator ({config.iterations} steps)")
            result = _train(config, norm, photos_dir, work / f"main_{norm}", config.iterations, extractor)
            models[norm] = result.model.float().eval()
            training[norm] = _training_summary(result)
        report["training"] = training

        progress("evaluating on held-out crops")
        loss_fn.to(device)
        x = crops.to(device)
        report["eval_loss"] = {
            "instance": _loss_values(loss_fn, _forward(models["instance"], x), x),
            "batch": _loss_values(loss_fn, _forward(models["batch"], x), x),
            # BN normalizing with the statistics of the evaluation batch instead of its running ones
            "batch_train_mode": _loss_values(loss_fn, _forward(models["batch"], x, train_mode=True), x),
            "content_image": _loss_values(loss_fn, x, x),  # the unstylized photo, for scale
        }

        # -- 2: contrast ------------------------------------------------------------------------------
        progress("contrast series")
        mean = x.mean(dim=(2, 3), keepdim=True)
        scaled = {k: mean + k * (x - mean) for k in config.contrast_factors}
        report["contrast"] = {
            "factors": list(config.contrast_factors),
            "input_change": {str(k): float((v.clamp(0, 1) - x).abs().mean()) for k, v in scaled.items()},
            "clipped_fraction": {str(k): float(((v < 0) | (v > 1)).float().mean()) for k, v in scaled.items()},
            **{norm: _contrast(models[norm], x, config.contrast_factors) for norm in NORMS},
        }

        # -- 3: batch dependence ---------------------------------------------------------------------
        progress("batch dependence")
        report["batch_dependence"] = {
            "batch_sizes": list(config.batch_sizes),
            **{norm: _batch_dependence(models[norm], x, config.batch_sizes) for norm in NORMS},
        }

        # -- 4: training-set size --------------------------------------------------------------------
        iterations = config.set_size_iterations or config.iterations
        train_photos = [img for _, img in train_named]
        set_size: dict = {"iterations": iterations, "sizes": list(config.set_sizes)}
        pools = {
            count: _write_folder(_crop_pool(train_photos, count, config, config.seed + 17), work / f"pool_{count}")
            for count in config.set_sizes
        }
        for norm in config.set_size_norms:
            rows = {}
            for count, folder in pools.items():
                progress(f"training-set size {count} ({norm} norm, {iterations} steps)")
                result = _train(config, norm, folder, work / f"size_{norm}_{count}", iterations, extractor)
                model = result.model.float().eval()
                rows[str(count)] = {
                    "eval": _loss_values(loss_fn, _forward(model, x), x),
                    "train_final_total": _training_summary(result)["final_total_mean_last_10pct"],
                    "seconds": result.seconds,
                }
            set_size[norm] = rows
        report["set_size"] = set_size

        # -- 5: speed --------------------------------------------------------------------------------
        progress(f"speed: generator and {config.optimize_iterations} optimisation iterations at {config.speed_size} px")
        report["speed"] = _speed(config, models, eval_images[0], source, extractor, device)

        # -- the figure ------------------------------------------------------------------------------
        progress("figure")
        _figure(config, models, eval_images[0], eval_names[0], source, output / "figure.png", device)

    report["meta"]["load_average_end"] = _load_average()
    report["meta"]["wall_seconds"] = time.perf_counter() - started
    cpu_after = _cpu_seconds()
    report["meta"]["cpu_seconds"] = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    report["claims"] = _verdicts(report)
    write_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(output / "report.md", _markdown(report))
    return report


def _validate(config: ExperimentConfig) -> None:
    if config.eval_dir is not None and not Path(config.eval_dir).is_dir():
        raise ExperimentError(f"--eval {config.eval_dir}: not a folder")
    if any(k <= 0 for k in config.contrast_factors) or 1.0 not in config.contrast_factors:
        raise ExperimentError(f"contrast factors must be positive and include 1, got {config.contrast_factors}")
    if any(b < 2 for b in config.batch_sizes) or any(n < 1 for n in config.set_sizes):
        raise ExperimentError("batch sizes must be >= 2 and training-set sizes >= 1")
    if config.iterations < 1 or config.image_size < 16 or config.speed_size < 16:
        raise ExperimentError("iterations must be >= 1 and image sizes >= 16")
    unknown = [n for n in config.set_size_norms if n not in NORMS]
    if unknown:
        raise ExperimentError(f"set_size_norms: unknown norm(s) {unknown}; choose from {NORMS}")


def _train(config: ExperimentConfig, norm: str, content: Path, folder: Path, iterations: int, extractor):
    train_config = TrainConfig(
        style=config.style, content=str(content), output=str(folder / "model.safetensors"), log_dir=str(folder),
        arch="transformer", norm=norm, width=config.width, num_residual=config.num_residual,
        iterations=iterations, batch_size=config.batch_size, image_size=config.image_size,
        style_size=config.style_size, content_weight=config.content_weight, style_weight=config.style_weight,
        tv_weight=config.tv_weight, content_layers=config.content_layers, style_layers=config.style_layers,
        lr=config.lr, seed=config.seed, device=config.device, dtype=config.dtype,
        checkpoint_every=iterations, sample_every=0, vgg_weights=config.vgg_weights or "default",
    )  # fmt: skip
    return train(train_config, handle_signals=False, extractor=extractor)


def _training_summary(result) -> dict:
    totals = [h["total"] for h in result.history]
    tail = totals[-max(1, len(totals) // 10) :]
    every = max(1, len(totals) // 50)
    return {
        "steps": result.step,
        "seconds": result.seconds,
        "final_total_mean_last_10pct": sum(tail) / len(tail),
        "curve": [{k: h[k] for k in ("step", "total", "content", "style", "tv")} for h in result.history[::every]],
    }


def _speed(config, models, photo: Tensor, style: StyleSource, extractor, device: torch.device) -> dict:
    from instyle.engine.models import TransformerNet

    image = resize_long_side(photo, config.speed_size)
    generator_seconds = {
        f"{norm} (width {config.width:g}, trained)": _time_generator(models[norm].to(device), image, config.speed_repeats, device)
        for norm in NORMS
    }
    torch.manual_seed(config.seed)
    full = TransformerNet(norm="instance", width=1.0, num_residual=5).to(device)
    generator_seconds["instance (width 1, untrained)"] = _time_generator(full, image, config.speed_repeats, device)

    # The optimiser with its own weights and L-BFGS, on the experiment's VGG layers (no relu5_1,
    # which makes each iteration a little cheaper than `instyle optimize`'s default).
    optimize_config = OptimizeConfig(
        size=config.speed_size, iterations=config.optimize_iterations, content_layers=config.content_layers,
        style_layers=config.style_layers, seed=config.seed, device=config.device, dtype="fp32",
    )  # fmt: skip
    _synchronize(device)
    result = optimize(photo, style, optimize_config, extractor=extractor)  # an image or stored targets
    _synchronize(device)
    evaluations = len(result.history)
    per_evaluation = result.seconds / max(evaluations, 1)
    standard = OptimizeConfig().iterations
    measured_standard = config.optimize_iterations >= standard
    optimize_seconds = result.seconds if measured_standard else per_evaluation * standard
    fastest = min(generator_seconds.values())
    slowest = max(generator_seconds.values())
    return {
        "size": list(image.shape[-2:]),
        "dtype": "fp32",
        "generator_seconds_per_image": generator_seconds,
        "optimize": {
            "iterations_run": config.optimize_iterations,
            "function_evaluations": evaluations,
            "seconds": result.seconds,
            "seconds_per_evaluation": per_evaluation,
            "standard_iterations": standard,
            "seconds_for_standard": optimize_seconds,
            "extrapolated": not measured_standard,
        },
        "optimize_style": (
            f"stored style targets at {style.targets.style_size} px" if style.targets is not None
            else f"style image at {config.speed_size} px"
        ),
        "ratio_optimize_over_generator": {"slowest_generator": optimize_seconds / slowest, "fastest_generator": optimize_seconds / fastest},
    }


def _style_panel(ax, style: StyleSource, x: Tensor, config, show) -> None:
    """The painting when there is one; for stored targets (no painting shipped), the output of the
    model file that carries them, or a text panel when it cannot be run."""
    if style.image is not None:
        show(ax, resize_long_side(style.image, config.figure_size), "style")
        return
    try:
        from instyle.engine.modelfile import load_generator

        generator, _ = load_generator(style.path)
        show(ax, _forward(generator.to(x.device), x), f"style {style.name}: its model's output\n(no painting shipped)")
    except (ModelFileError, RuntimeError, ValueError):
        ax.text(0.5, 0.5, f"style: {style.name}\nstored statistics at\n{style.targets.style_size} px (no painting)",
                ha="center", va="center", fontsize=9, transform=ax.transAxes)  # fmt: skip


def _figure(config, models, photo: Tensor, name: str, style: StyleSource, path: Path, device: torch.device) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = resize_long_side(photo, config.figure_size).unsqueeze(0).to(device)  # (1, 3, H, W)
    mean = x.mean(dim=(2, 3), keepdim=True)
    factors = config.contrast_factors
    inputs = [(mean + k * (x - mean)).clamp(0, 1) for k in factors]
    outputs = {norm: [_forward(models[norm], xk) for xk in inputs] for norm in NORMS}
    columns = max(4, len(factors))
    fig, axes = plt.subplots(4, columns, figsize=(2.6 * columns, 2.6 * 4 * x.shape[2] / x.shape[3] + 0.6))
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, image: Tensor, title: str) -> None:
        ax.imshow(image.squeeze(0).clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_title(title, fontsize=9)

    k1 = factors.index(1.0)
    _style_panel(axes[0, 0], style, x, config, show)
    show(axes[0, 1], x, f"content ({name})")
    show(axes[0, 2], outputs["instance"][k1], "instance norm")
    show(axes[0, 3], outputs["batch"][k1], "batch norm (eval)")
    for j, k in enumerate(factors):
        show(axes[1, j], inputs[j], f"contrast x{k:g}")
        show(axes[2, j], outputs["instance"][j], f"IN, contrast x{k:g}")
        show(axes[3, j], outputs["batch"][j], f"BN, contrast x{k:g}")
    fig.suptitle(f"instyle experiment in-vs-bn{' --quick' if config.quick else ''}: held-out photo", fontsize=10)
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------- verdicts and the report

# Differences below this (mean |difference| on [0, 1] pixels) are fp32 rounding, not behaviour.
NUMERICAL_NOISE = 1e-4


def _verdicts(report: dict) -> list[dict]:
    """One verdict per claim from the numbers, by the rule stated with it."""
    loss = report["eval_loss"]
    contrast = report["contrast"]
    batch = report["batch_dependence"]
    speed = report["speed"]
    claims = []

    inst, bn = loss["instance"], loss["batch"]
    better = [term for term in ("total", "style", "content") if inst[term] < bn[term]]
    claims.append({
        "claim": "1. IN instead of BN in every layer of the generator gives better stylization",
        "rule": "IN's held-out total loss (eval mode) below BN's",
        "holds": inst["total"] < bn["total"],
        "evidence": f"held-out total IN {inst['total']:.4g} vs BN {bn['total']:.4g} "
                    f"({_pct(inst['total'], bn['total'])}); IN lower on: {', '.join(better) or 'none'}; "
                    f"BN with batch statistics {loss['batch_train_mode']['total']:.4g}",
    })  # fmt: skip

    others = [str(k) for k in contrast["factors"] if k != 1.0]
    in_change = {k: contrast["instance"][k] for k in others}
    bn_change = {k: contrast["batch"][k] for k in others}
    claims.append({
        "claim": "2. The stylized image does not depend on the content image's contrast with IN; with BN it does",
        "rule": "IN's mean output change below BN's at every contrast factor k != 1",
        "holds": all(in_change[k] < bn_change[k] for k in others),
        "evidence": "mean abs(G(x_k) - G(x_1)), IN vs BN: "
                    + "; ".join(f"k={k}: {in_change[k]:.3g} vs {bn_change[k]:.3g}" for k in others),
    })  # fmt: skip

    def worst(norm: str, mode: str) -> float:
        return max(row["mean"] for row in batch[norm][mode].values())

    in_worst = max(worst("instance", "train"), worst("instance", "eval"), batch["instance"]["train_vs_eval_alone"]["mean"])
    bn_train = worst("batch", "train")
    bn_gap = batch["batch"]["train_vs_eval_alone"]["mean"]
    claims.append({
        "claim": "3. IN behaves the same in training and at test time; BN does not, and in training one image's output depends on its batch",
        "rule": f"every IN difference below {NUMERICAL_NOISE:g} (rounding), and BN's train-mode batch and train/eval differences above it",
        "holds": in_worst < NUMERICAL_NOISE and bn_train > NUMERICAL_NOISE and bn_gap > NUMERICAL_NOISE,
        "evidence": f"largest IN difference {in_worst:.3g}; BN in a batch vs alone (train mode) up to {bn_train:.3g}, "
                    f"BN train vs eval mode (alone) {bn_gap:.3g}; BN in eval mode up to {worst('batch', 'eval'):.3g}",
    })  # fmt: skip

    set_size = report["set_size"]
    norm = "instance" if "instance" in set_size else next(n for n in NORMS if n in set_size)
    totals = {int(n): row["eval"]["total"] for n, row in set_size[norm].items()}
    sizes = sorted(totals)
    best = min(totals, key=totals.get)
    claim4 = {
        "claim": "4. A generator trained on about 16 content images, stopped early, is good; more images do not help",
        "rule": "held-out total with 16 images within 2% of the best size, and more images not better than 16 by over 2%",
        "evidence": f"{norm} norm, {set_size['iterations']} steps each; held-out total by size: "
                    + ", ".join(f"{n}: {totals[n]:.4g}" for n in sizes) + f"; best {best}",
    }  # fmt: skip
    if 16 in totals:
        larger = [n for n in sizes if n > 16]
        claim4["holds"] = totals[16] <= 1.02 * totals[best] and all(totals[n] >= 0.98 * totals[16] for n in larger)
    else:
        claim4["holds"] = None
        claim4["evidence"] += " (16 not among the sizes: not tested)"
    claims.append(claim4)

    ratio = speed["ratio_optimize_over_generator"]["slowest_generator"]
    extrapolated = speed["optimize"]["extrapolated"]
    claims.append({
        "claim": "5. The feed-forward generator is orders of magnitude faster than the Gatys optimisation",
        "rule": "optimisation time for the standard iteration count over the slowest generator's time per image >= 100",
        "holds": ratio >= 100,
        "evidence": f"{ratio:.0f}x at {'x'.join(map(str, speed['size']))} px"
                    + (" (optimisation time extrapolated from "
                       f"{speed['optimize']['function_evaluations']} evaluations to {speed['optimize']['standard_iterations']})"
                       if extrapolated else ""),
    })  # fmt: skip
    return claims


def _pct(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+.1f}% relative to BN" if b else "n/a"


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


def _markdown(report: dict) -> str:
    meta, config, data = report["meta"], report["config"], report["data"]
    lines = [
        "# Instance vs batch normalization in the generator: the seed's five claims, measured",
        "",
        f"- Command: `{meta['command'] or 'instyle.apps.experiment.run_in_vs_bn(...)'}`",
        f"- Date (UTC): {meta['date_utc']}",
        f"- Device: {meta['device']}",
        f"- Versions: instyle {meta['instyle_version']}, torch {meta['torch_version']}, Python {meta['python']}",
        f"- Wall time: {meta['wall_seconds'] / 60:.1f} min; load average (1, 5, 15 min) at start "
        f"{meta['load_average_start']}, at end {meta['load_average_end']}"
        + (f"; CPU time of the run (user + system, all threads) {meta['cpu_seconds'] / 60:.1f} min" if meta.get("cpu_seconds") else ""),
        *(f"- Note: {note}" for note in meta.get("notes", [])),
        "",
        f"Setting{' (`--quick`, small sizes: expect rough numbers)' if config['quick'] else ''}: TransformerNet, "
        f"width {config['width']:g}, residual blocks: {config['num_residual']}, trained twice from seed {config['seed']} "
        f"on the same batches ({config['iterations']} steps, batch {config['batch_size']}, {config['image_size']} px crops, "
        f"style at {config['style_size']} px, Adam lr {config['lr']:g} with cosine decay, training dtype "
        f"`{config['dtype']}`), once with instance norm and once with batch norm in every layer. Loss: "
        f"content_weight {config['content_weight']:g} ({', '.join(config['content_layers'])}), style_weight "
        f"{config['style_weight']:g} ({', '.join(config['style_layers'])}, Gram), tv_weight {config['tv_weight']:g}. "
        f"Style: {_style_words(report['style'])}. Training photos: {', '.join(data['train_photos'])}. Evaluation: "
        f"{data['eval_crops']} crops of {data['eval_crop_size']} px from {', '.join(data['eval_images'])} (not trained on), "
        "at the training scale, eval mode, fp32.",
        "",
        "## Verdicts",
        "",
        "| claim | verdict | rule | evidence |",
        "|---|---|---|---|",
    ]
    for c in report["claims"]:
        cells = [c["claim"], _verdict_word(c["holds"]), c["rule"], c["evidence"]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")

    loss = report["eval_loss"]
    lines += [
        "",
        "## 1. Held-out loss (eval mode)",
        "",
        "Weighted terms of the training loss on the held-out crops (lower is better). A loss is a proxy for "
        "stylization quality; see figure.png for the images.",
        "",
        "| generator | content | style | tv | total |",
        "|---|---|---|---|---|",
    ]
    names = {
        "instance": "instance norm",
        "batch": "batch norm (running statistics)",
        "batch_train_mode": "batch norm, batch statistics of the evaluation batch",
        "content_image": "the content photo itself (no stylization)",
    }
    for key, label in names.items():
        row = loss[key]
        lines.append(f"| {label} | {_fmt(row['content'])} | {_fmt(row['style'])} | {_fmt(row['tv'])} | {_fmt(row['total'])} |")
    for norm in NORMS:
        t = report["training"][norm]
        lines.append("")
        lines.append(
            f"Training ({norm}): {t['steps']} steps in {t['seconds']:.0f} s; mean training total over the last 10% of "
            f"steps {_fmt(t['final_total_mean_last_10pct'])}."
        )

    contrast = report["contrast"]
    factors = [str(k) for k in contrast["factors"]]
    lines += [
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

    batch = report["batch_dependence"]
    sizes = [str(b) for b in batch["batch_sizes"]]
    lines += [
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

    set_size = report["set_size"]
    lines += [
        "",
        "## 4. Training-set size",
        "",
        f"The same {set_size['iterations']} steps on N fixed content images: square crops of the training photos "
        f"({round(1.5 * config['image_size'])} px, random scale, position and flip, photos taken in turn; the trainer "
        "then samples its random crops from these). Held-out loss, eval mode.",
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

    speed = report["speed"]
    opt = speed["optimize"]
    lines += [
        "",
        "## 5. Speed",
        "",
        f"One {'x'.join(map(str, speed['size']))} px image, fp32, {meta['device'].split(',')[0]}. Generator: median of "
        f"{config['speed_repeats']} forward passes. Optimisation: `instyle.optimize` (L-BFGS, OptimizeConfig's weights) on "
        "the experiment's VGG layers (no relu5_1, so each iteration is a little cheaper than `instyle optimize`'s default), "
        f"with the {speed.get('optimize_style', 'style image')}.",
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
    return "\n".join(lines)

"""What the experiment measures: evaluation crops, held-out losses, the contrast series, batch
dependence, the training summaries, speed, and the run's own cost."""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor

from instyle.apps.experiment.config import NORMS, ExperimentConfig
from instyle.engine.device import synchronize, time_call
from instyle.engine.image import resize_long_side
from instyle.engine.losses import PerceptualLoss
from instyle.engine.optimize import OptimizeConfig, optimize
from instyle.engine.targets import StyleSource
from instyle.engine.training import data
from instyle.engine.training.data import training_scale_crops

# ---------------------------------------------------------------------------- data


def eval_crops(images: list[Tensor], config: ExperimentConfig) -> Tensor:
    """Held-out crops at the training scale: (N, 3, image_size, image_size)."""
    size = config.train.image_size
    return training_scale_crops(images[: config.eval_max_images], size, config.eval_crops_per_image)


def crop_pool(photos: list[Tensor], count: int, config: ExperimentConfig, seed: int) -> list[Tensor]:
    """``count`` fixed content images for the training-set-size study (the trainer's crop pool)."""
    return data.crop_pool(photos, count, config.train.image_size, seed)


# ---------------------------------------------------------------------------- the generators' outputs


def forward(model: torch.nn.Module, x: Tensor, train_mode: bool = False) -> Tensor:
    """The generator's fp32 output; train mode runs on a copy so BN's running statistics stay put."""
    with torch.no_grad():
        if train_mode:
            return copy.deepcopy(model).train()(x).float()
        model.eval()
        return model(x).float()


def loss_values(loss_fn: PerceptualLoss, output: Tensor, content: Tensor) -> dict[str, float]:
    with torch.no_grad():
        total, terms = loss_fn(output, content)
    return {"content": float(terms["content"]), "style": float(terms["style"]), "tv": float(terms["tv"]), "total": float(total)}


def eval_losses(models: dict[str, torch.nn.Module], loss_fn: PerceptualLoss, x: Tensor) -> dict:
    """Held-out losses of both generators in eval mode, of BN with the evaluation batch's statistics,
    and of the unstylized photos (for scale)."""
    return {
        "instance": loss_values(loss_fn, forward(models["instance"], x), x),
        "batch": loss_values(loss_fn, forward(models["batch"], x), x),
        "batch_train_mode": loss_values(loss_fn, forward(models["batch"], x, train_mode=True), x),
        "content_image": loss_values(loss_fn, x, x),
    }


def contrast_series(models: dict[str, torch.nn.Module], x: Tensor, factors: tuple[float, ...]) -> dict:
    """The inputs' change and clipped fraction per contrast factor, and each generator's output change."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    scaled = {k: mean + k * (x - mean) for k in factors}
    return {
        "factors": list(factors),
        "input_change": {str(k): float((v.clamp(0, 1) - x).abs().mean()) for k, v in scaled.items()},
        "clipped_fraction": {str(k): float(((v < 0) | (v > 1)).float().mean()) for k, v in scaled.items()},
        **{norm: contrast(models[norm], x, factors) for norm in NORMS},
    }


def contrast(model: torch.nn.Module, crops: Tensor, factors: tuple[float, ...]) -> dict[str, float]:
    """Mean |G(x_k) - G(x_1)| per factor k, eval mode."""
    mean = crops.mean(dim=(2, 3), keepdim=True)  # (N, 3, 1, 1)
    outputs = {k: forward(model, (mean + k * (crops - mean)).clamp(0, 1)) for k in factors}
    return {str(k): float((output - outputs[1.0]).abs().mean()) for k, output in outputs.items()}


def _in_batches(runner: torch.nn.Module, crops: Tensor, alone: Tensor, b: int) -> dict[str, float]:
    """Each crop inside a batch with the next ``b - 1`` crops (cyclic) against the crop alone."""
    n = crops.shape[0]
    diffs = [(runner(crops[[(i + j) % n for j in range(b)]])[0].float() - alone[i]).abs() for i in range(n)]
    stacked = torch.stack(diffs)
    return {"mean": float(stacked.mean()), "max": float(stacked.max())}


def batch_dependence(model: torch.nn.Module, crops: Tensor, batch_sizes: tuple[int, ...]) -> dict:
    """Each crop alone against the same crop inside a batch with the next B - 1 crops (cyclic),
    in eval and train modes; and train-mode against eval-mode output of the crop alone."""
    result: dict = {}
    alone_by_mode = {}
    for mode in ("eval", "train"):
        runner = copy.deepcopy(model).train(mode == "train")
        with torch.no_grad():
            alone = torch.cat([runner(crops[i : i + 1]).float() for i in range(crops.shape[0])])
            alone_by_mode[mode] = alone
            result[mode] = {str(b): _in_batches(runner, crops, alone, b) for b in batch_sizes}
    gap = (alone_by_mode["train"] - alone_by_mode["eval"]).abs()
    result["train_vs_eval_alone"] = {"mean": float(gap.mean()), "max": float(gap.max())}
    return result


def training_summary(result) -> dict:
    totals = [h["total"] for h in result.history]
    tail = totals[-max(1, len(totals) // 10) :]
    every = max(1, len(totals) // 50)
    return {
        "steps": result.step,
        "seconds": result.seconds,
        "final_total_mean_last_10pct": sum(tail) / len(tail),
        "curve": [{k: h[k] for k in ("step", "total", "content", "style", "tv")} for h in result.history[::every]],
    }


# ---------------------------------------------------------------------------- speed


def time_generator(model: torch.nn.Module, image: Tensor, repeats: int, device: torch.device) -> float:
    """Median seconds per forward pass of one image (eval mode, fp32), after two warm-up runs."""
    model.eval()
    x = image.unsqueeze(0).to(device)
    with torch.no_grad():
        return time_call(lambda: model(x), device, repeats=repeats, warmup=2)


def generator_speeds(config: ExperimentConfig, models: dict, image: Tensor, device: torch.device) -> dict[str, float]:
    """Seconds per image of both trained generators and of an untrained full-width one."""
    from instyle.engine.models import TransformerNet

    seconds = {
        f"{norm} (width {config.train.width:g}, trained)": time_generator(models[norm].to(device), image, config.speed_repeats, device)
        for norm in NORMS
    }  # fmt: skip
    torch.manual_seed(config.seed)
    full = TransformerNet(norm="instance", width=1.0, num_residual=5).to(device)
    seconds["instance (width 1, untrained)"] = time_generator(full, image, config.speed_repeats, device)
    return seconds


def optimize_speed(config: ExperimentConfig, photo: Tensor, style: StyleSource, extractor, device: torch.device) -> dict:
    """The optimiser with its own weights and L-BFGS, on the experiment's VGG layers (no relu5_1,
    which makes each iteration a little cheaper than `instyle optimize`'s default); fewer than the
    standard iterations are extrapolated to it at the measured time per evaluation."""
    optimize_config = OptimizeConfig(
        size=config.speed_size, iterations=config.optimize_iterations, content_layers=config.train.loss.content_layers,
        style_layers=config.train.loss.style_layers, seed=config.seed, device=config.device, dtype="fp32",
    )  # fmt: skip
    synchronize(device)
    result = optimize(photo, style, optimize_config, extractor=extractor)  # an image or stored targets
    synchronize(device)
    evaluations = len(result.history)
    per_evaluation = result.seconds / max(evaluations, 1)
    standard = OptimizeConfig().iterations
    measured_standard = config.optimize_iterations >= standard
    return {
        "iterations_run": config.optimize_iterations,
        "function_evaluations": evaluations,
        "seconds": result.seconds,
        "seconds_per_evaluation": per_evaluation,
        "standard_iterations": standard,
        "seconds_for_standard": result.seconds if measured_standard else per_evaluation * standard,
        "extrapolated": not measured_standard,
    }


def speed(config: ExperimentConfig, models, photo: Tensor, style: StyleSource, extractor, device: torch.device) -> dict:
    image = resize_long_side(photo, config.speed_size)
    generator_seconds = generator_speeds(config, models, image, device)
    opt = optimize_speed(config, photo, style, extractor, device)
    optimize_seconds = opt["seconds_for_standard"]
    return {
        "size": list(image.shape[-2:]),
        "dtype": "fp32",
        "generator_seconds_per_image": generator_seconds,
        "optimize": opt,
        "optimize_style": (
            f"stored style targets at {style.targets.style_size} px" if style.targets is not None
            else f"style image at {config.speed_size} px"
        ),
        "ratio_optimize_over_generator": {
            "slowest_generator": optimize_seconds / max(generator_seconds.values()),
            "fastest_generator": optimize_seconds / min(generator_seconds.values()),
        },
    }  # fmt: skip


# ---------------------------------------------------------------------------- the run's own cost


def cpu_seconds() -> float | None:
    """User + system CPU time of this process, all threads."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    except (ImportError, OSError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None

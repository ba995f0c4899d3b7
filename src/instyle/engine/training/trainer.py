"""Training a feed-forward stylization generator against the VGG descriptor network.

``train(TrainConfig(...))`` runs the loop and returns a ``TrainResult``; it prints nothing
(the CLI passes ``on_step`` for its progress bar). Everything a resume needs is saved:
model, optimizer, scheduler, step, and the RNG states; the data order depends only on
``(seed, step)``, so N steps straight equal k steps + resume + N - k steps.

Multi-process: launched under ``torchrun``, each rank takes its slice of the same global
batch and DistributedDataParallel averages the gradients, so the loss curve matches one
process with the same global batch (instance norm is per sample).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.fileio import write_atomic
from instyle.engine.image import ImageError, default_content_images, iter_image_files, load_image, resize_long_side
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import save_model
from instyle.engine.targets import apply_targets, compute_style_targets, resolve_style, adopt_target_weights
from instyle.engine.training.config import TrainConfig, TrainingError, TrainingInterrupted, TrainResult, _flag, check_config
from instyle.engine.device import loss_memory_format, preferred_memory_format, resolve_autocast_dtype, resolve_device

CHECKPOINT_NAME = "checkpoint.pt"
_log = logging.getLogger(__name__)  # the CLI shows its messages on stderr


# ---------------------------------------------------------------------------- data


def load_content_set(
    content: str | None, image_size: int, limit: int | None = None, content_size: int | None = None
) -> list[Tensor]:
    """Content photos as (3, H, W) tensors whose short side is at least ``image_size``: large photos
    are downscaled to ``content_size`` (default 1.5 x ``image_size``), small ones upscaled to a crop."""
    if content is None:
        images = [img for _, img in default_content_images()]
    else:
        paths = list(iter_image_files([content], recursive=True))
        if not paths:
            raise TrainingError(f"--content {content}: no images found")
        images = []
        for path in paths:  # one unreadable photo in a folder of many is skipped, and said so
            try:
                images.append(load_image(path))
            except ImageError as error:
                _log.warning("skipping %s", error)
        if not images:
            raise TrainingError(f"--content {content}: none of its {len(paths)} images could be read")
    if limit is not None:
        images = images[:limit]
    if not images:
        raise TrainingError("no content images to train on")
    prepared = []
    for img in images:
        short = min(img.shape[-2:])
        # Downscale large photos so crops see whole objects; upscale small ones to fit a crop.
        target_short = max(image_size, min(short, content_size or int(image_size * 1.5)))
        long_side = round(max(img.shape[-2:]) * target_short / short)
        prepared.append(resize_long_side(img, long_side))
    return prepared


def sample_batch(images: list[Tensor], batch_size: int, size: int, generator: torch.Generator) -> Tensor:
    """Random crops with random horizontal flips: (batch_size, 3, size, size)."""
    crops = []
    for _ in range(batch_size):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=generator))
        left = int(torch.randint(w - size + 1, (1,), generator=generator))
        crop = img[:, top : top + size, left : left + size]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def batch_for_step(images: list[Tensor], config: TrainConfig, step: int) -> Tensor:
    """The global batch of ``step``: a function of (seed, step) alone, for exact resume."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return sample_batch(images, config.batch_size, config.image_size, generator)


def corner_crops(image: Tensor, size: int, count: int) -> list[Tensor]:
    """Up to ``count`` crops (3, size, size): centre, then the four corners."""
    h, w = image.shape[-2:]
    spots = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [image[:, t : t + size, l : l + size] for t, l in spots[:count]]


class _GraphedStep:
    """Forward, loss and backward of a training step, captured once as a CUDA graph and replayed.

    Every step has the same shapes, so after :attr:`EAGER_STEPS` ordinary steps (cuDNN's algorithm
    search, Triton's compilation) the work of ``forward_backward`` is recorded on a side stream, as
    torch's CUDA-graph notes prescribe, and each later step copies its batch into the captured input
    and replays: about a thousand kernel launches for one. The gradients live in the graph's memory
    and are overwritten, not accumulated, by every replay, so the optimizer (outside the graph, with
    the scheduler's learning rate) must not set them to None afterwards.
    """

    EAGER_STEPS = 2
    WARMUP = 2

    def __init__(self, graph, batch: Tensor, values: Tensor) -> None:
        self.graph, self.batch, self.values = graph, batch, values

    @classmethod
    def capture(cls, forward_backward, batch: Tensor, optimizer) -> "_GraphedStep | None":
        """The captured step, or None (with a warning) where capture fails: training goes on eagerly."""
        static_batch = batch.clone()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(cls.WARMUP):
                    optimizer.zero_grad(set_to_none=True)
                    forward_backward(static_batch, cache=False)
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                values = forward_backward(static_batch, cache=False)
        except Exception as err:  # noqa: BLE001 - any capture fault falls back to eager steps
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            warnings.warn(f"CUDA graph capture failed ({err}); training continues without it", RuntimeWarning)
            return None
        return cls(graph, static_batch, values)

    def __call__(self, batch: Tensor) -> Tensor:
        self.batch.copy_(batch)
        self.graph.replay()
        return self.values


def heldout_crops(config: TrainConfig) -> Tensor:
    """Fixed crops of the held-out photos at the training scale: centre and four corners of each of
    up to 16 photos, (N, 3, image_size, image_size)."""
    photos = load_content_set(config.eval_content, config.image_size, 16, config.content_size)
    return torch.stack([crop for photo in photos for crop in corner_crops(photo, config.image_size, 5)])


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, loss_fn: PerceptualLoss, crops: Tensor, device, memory_format) -> dict[str, float]:
    """Mean weighted loss terms over ``crops``, in eval mode and fp32."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for i in range(0, len(crops), 8):
        batch = crops[i : i + 8].to(device, memory_format=memory_format)
        total, terms = loss_fn(model(batch), batch)
        for key, value in {"total": total, **terms}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(batch)
    model.train(was_training)
    return {key: value / len(crops) for key, value in sums.items()}


# ---------------------------------------------------------------------------- checkpoints


def atomic_torch_save(obj: dict, path: Path) -> None:
    # serialized in memory first: torch.save's own writer turns "disk full" into an opaque error
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def _refuse_to_restart_unfinished(checkpoint_path: Path) -> None:
    """A new run would overwrite the checkpoint of an unfinished one (a run stopped by a signal, say):
    refuse, so that forgetting --resume loses nothing. A finished run's checkpoint may be replaced."""
    try:
        state = load_checkpoint(checkpoint_path)
        step, planned = int(state["step"]), int(json.loads(state["config"])["iterations"])
        finished = step >= planned or bool(state.get("stopped_early"))
    except (TrainingError, KeyError, TypeError, ValueError):
        return  # not a checkpoint of ours: nothing to resume, so nothing is lost
    if not finished:
        raise TrainingError(
            f"{checkpoint_path} holds an unfinished run (step {step} of {planned}); continue it with --resume, "
            f"or delete {checkpoint_path.parent} (or pass another --log-dir) to start again"
        )


# What a resumed run may change: how long it runs, what it logs and where, and how it computes (not
# what). Every other setting must be the checkpoint's, or the resumed run is not the run it continues.
_RESUME_MAY_CHANGE = frozenset({
    "iterations", "checkpoint_every", "sample_every", "eval_every", "eval_content", "patience", "log_dir",
    "resume", "output", "style", "content", "device", "compile", "cuda_graph", "save_dtype",
})  # fmt: skip


def _check_resumable(saved: dict, config: TrainConfig, checkpoint_path: Path) -> None:
    current = config.to_json()
    changed = [n for n in current if n not in _RESUME_MAY_CHANGE and n in saved and saved[n] != current[n]]
    if changed:
        def shown(value):
            return " ".join(map(str, value)) if isinstance(value, list) else value

        settings = ", ".join(f"{_flag(n)} {shown(saved[n])} (now {shown(current[n])})" for n in changed)
        raise TrainingError(
            f"--resume: {checkpoint_path} was made with {settings}; resume with its settings, "
            "or start a new run in another --log-dir"
        )


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, garbage, or a pickle that wants to run code
        raise TrainingError(f"cannot load checkpoint {path}: {error}") from error


# ---------------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _cosine_lr(config: TrainConfig) -> Callable[[int], float]:
    final = config.lr_final_fraction

    def factor(step: int) -> float:
        progress = min(step / max(config.iterations, 1), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def stored_style_size(source, style: str, requested: int | None) -> int:
    """Stored style statistics exist at one size only: the style size is the one they were
    computed at; a different explicit ``--style-size`` is an error."""
    recorded = source.targets.style_size
    if requested is not None and requested != recorded:
        raise TrainingError(
            f"--style-size {requested} conflicts with --style {style}: its style targets were "
            f"computed at {recorded} px; leave --style-size out (or pass {recorded}), or pass the style image"
        )
    return recorded


def resolve_sizes(config: TrainConfig, device: torch.device) -> TrainConfig:
    """Fill in the device-dependent defaults (crop and style sizes)."""
    image_size = config.image_size or (256 if device.type == "cuda" else 128)
    style_size = config.style_size or 3 * image_size
    return dataclasses.replace(config, image_size=image_size, style_size=style_size)


def train(
    config: TrainConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    handle_signals: bool = True,
    extractor: torch.nn.Module | None = None,
) -> TrainResult:
    """Train the generator ``config`` describes; ``extractor`` replaces the VGG (tests)."""
    if not config.style:
        raise TrainingError("a style image or a bundled style name is required (--style IMG_OR_NAME)")
    check_config(config)
    rank, world = _distributed()
    if config.batch_size % world:
        raise TrainingError(f"--batch-size {config.batch_size} must be divisible by the {world} processes")
    device = resolve_device(config.device)
    source = resolve_style(config.style)  # names the problem: unknown style, no targets, unreadable image
    if source.targets is not None:
        config = dataclasses.replace(config, style_size=stored_style_size(source, config.style, config.style_size))
    config = adopt_target_weights(config, source)
    if config.vgg_weights is None:  # recorded by name in the model file's training config
        config = dataclasses.replace(config, vgg_weights=config.default_vgg_weights)
    config = resolve_sizes(config, device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    autocast_dtype = resolve_autocast_dtype(config.dtype, device)
    memory_format = preferred_memory_format(device, autocast_dtype)

    output = Path(config.output)
    log_dir = Path(config.log_dir) if config.log_dir else output.with_name(output.stem + ".train")
    checkpoint_path = log_dir / CHECKPOINT_NAME
    if not config.resume and checkpoint_path.exists():
        _refuse_to_restart_unfinished(checkpoint_path)
    if rank == 0:
        log_dir.mkdir(parents=True, exist_ok=True)

    content_images = load_content_set(config.content, config.image_size, config.num_content, config.content_size)
    # On CUDA the photos (up to 1 GiB of them) also live on the device, so each step's crops are cut
    # there instead of being stacked on the host and copied over; the crops are the same.
    crop_source = content_images
    if device.type == "cuda" and sum(img.numel() * img.element_size() for img in content_images) <= 1 << 30:
        crop_source = [img.to(device) for img in content_images]

    from instyle.engine.models import build_generator

    torch.manual_seed(config.seed)
    options = {"norm": config.norm}
    if config.arch == "transformer":
        options.update(width=config.width, num_residual=config.num_residual)
    model = build_generator(config.arch, **options)
    model = model.to(device, memory_format=memory_format)
    # the loss network in its own layout: channels_last wherever it computes in 16 bits (see loss_memory_format)
    loss_fn = PerceptualLoss.from_config(config, extractor).to(device, memory_format=loss_memory_format(device, autocast_dtype))
    # The targets are computed once, in fp32 (also under --dtype bf16), so a style given by its stored
    # targets trains exactly like the image they were computed from; the model file keeps them.
    style_targets = source.targets or compute_style_targets(
        source.image, style_size=config.style_size, layers=config.style_layers, extractor=loss_fn.extractor,
        style_name=source.name, style_sha256=source.style_sha256, device=device,
    )  # fmt: skip
    apply_targets(loss_fn, style_targets, what=f"--style {config.style}")

    # fused: one kernel for the whole update on CUDA instead of several per parameter tensor
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_lr(config))
    step = 0
    history: list[dict[str, float]] = []
    heldout: list[dict[str, float]] = []  # step, train_seconds, loss terms
    train_seconds = 0.0  # time in training steps, across resumes
    eval_crops = heldout_crops(config) if config.eval_content else None
    # with --patience: the evaluation with the lowest held-out total, {"step", "total", "model" (on the CPU)}
    best: dict | None = None
    stopped_early = False
    if config.resume:
        if not checkpoint_path.exists():
            raise TrainingError(f"--resume: no checkpoint at {checkpoint_path}")
        state = load_checkpoint(checkpoint_path)
        _check_resumable(json.loads(state.get("config", "{}")), config, checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        history = list(state.get("history", []))
        heldout = list(state.get("heldout", []))
        train_seconds = float(state.get("train_seconds", 0.0))
        best, stopped_early = state.get("best"), bool(state.get("stopped_early", False))
        _set_rng_state(state["rng"])
    train_model, step_loss = model, loss_fn
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:  # the uncompiled modules still serve evaluation, samples and the saved file
        # static shapes: every step has the same; dynamic=False keeps a recompile from turning them symbolic
        train_model, step_loss = torch.compile(train_model, dynamic=False), torch.compile(loss_fn, dynamic=False)

    def save_checkpoint() -> None:
        if rank != 0:
            return
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(
                f"weights became NaN or inf by step {step}; stopped without overwriting {checkpoint_path}"
            )
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "history": history,
                "heldout": heldout,
                "train_seconds": train_seconds,
                "best": best,
                "stopped_early": stopped_early,
                "rng": _rng_state(),
                "config": json.dumps(config.to_json()),
            },
            checkpoint_path,
        )
        _write_log(history, log_dir, heldout, plot=False)  # the CSV follows the checkpoint (a plot costs more)

    stop_signal: list[int] = []
    previous_handlers = {}
    if handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, lambda s, _frame: stop_signal.append(s))

    def forward_backward(batch: Tensor, cache: bool = True) -> Tensor:
        """Loss and gradients of one batch (into .grad); the loss terms as one tensor, total first."""
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=cache):
            stylized = train_model(batch)
            total, terms = step_loss(stylized, batch)
        term_names[:] = list(terms)
        total.backward()
        return torch.stack([total.detach().float(), *(v.detach().float() for v in terms.values())])

    term_names: list[str] = []
    graphed: _GraphedStep | None = None
    use_graph = (
        config.cuda_graph and device.type == "cuda" and world == 1 and config.arch == "transformer"
    )
    eager_steps = 0
    start = time.perf_counter()
    local = config.batch_size // world
    losses: dict[str, float] = {}
    cudnn_benchmark = torch.backends.cudnn.benchmark
    # every step has the same shapes: let cuDNN time its algorithms once (for this loop only)
    torch.backends.cudnn.benchmark = cudnn_benchmark or device.type == "cuda"
    try:
        while step < config.iterations and not stopped_early:
            batch = batch_for_step(crop_source, config, step)[rank * local : (rank + 1) * local]
            batch = batch.to(device, memory_format=memory_format)
            step_start = time.perf_counter()
            if use_graph and graphed is None and eager_steps >= _GraphedStep.EAGER_STEPS:
                graphed = _GraphedStep.capture(forward_backward, batch, optimizer)
                use_graph = graphed is not None
            if graphed is not None:
                values_tensor = graphed(batch)
            else:
                optimizer.zero_grad(set_to_none=True)
                # without autocast's weight cache where a capture follows, as the capture must run: a
                # compiled step would otherwise recompile for the changed autocast state
                values_tensor = forward_backward(batch, cache=not use_graph)
                eager_steps += 1
            # One device-to-host read per step for every term (each .item() waits for the GPU).
            values = values_tensor.tolist()
            if not math.isfinite(values[0]):
                raise TrainingError(
                    f"loss became {values[0]} at step {step + 1}; stopped without saving "
                    f"(last good checkpoint: {checkpoint_path if checkpoint_path.exists() else 'none'})"
                )
            optimizer.step()
            scheduler.step()
            step += 1
            losses = dict(zip(["total", *term_names], values))
            if world > 1:
                packed = torch.tensor(list(losses.values()), dtype=torch.float64, device=device)
                torch.distributed.all_reduce(packed)
                losses = dict(zip(losses, (packed / world).tolist()))
            seconds = time.perf_counter() - step_start
            train_seconds += seconds
            losses["images_per_s"] = config.batch_size / max(seconds, 1e-9)
            history.append({"step": step, **losses})
            evaluate = eval_crops is not None and (step % config.eval_every == 0 or step == config.iterations)
            if rank == 0 and evaluate:
                terms_out = heldout_loss(model, loss_fn, eval_crops, device, memory_format)
                heldout.append({"step": step, "train_seconds": round(train_seconds, 3), **terms_out})
                _write_rows(heldout, log_dir / "heldout.csv")
                if config.patience:
                    if best is None or terms_out["total"] < best["total"]:
                        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                        best = {"step": step, "total": terms_out["total"], "model": weights}
                    stopped_early = sum(h["step"] > best["step"] for h in heldout) >= config.patience
            if world > 1 and evaluate and config.patience:  # rank 0 decides for every process
                flag = torch.tensor([float(stopped_early)], device=device)
                torch.distributed.broadcast(flag, src=0)
                stopped_early = bool(flag.item())
            if on_step is not None and rank == 0:
                on_step(step, losses)
            if step % config.checkpoint_every == 0 or step == config.iterations or stopped_early:
                save_checkpoint()
            if rank == 0 and config.sample_every and step % config.sample_every == 0:
                _save_samples(model, content_images, log_dir / f"samples_{step:06d}.png", device)
            if stop_signal:
                save_checkpoint()
                if rank == 0:
                    _write_log(history, log_dir, heldout)
                raise TrainingInterrupted(stop_signal[0], checkpoint_path, step)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)

    best_heldout = heldout[-1] if heldout else None
    if best is not None:  # the model of the best evaluation, not the last step's
        model.load_state_dict(best["model"])
        best_heldout = next(h for h in heldout if h["step"] == best["step"])
    if rank == 0:
        _write_log(history, log_dir, heldout)
        metadata = {
            "training": config.to_json(),
            "style_name": source.name,
            "style_sha256": style_targets.style_sha256,
            "style_source": source.to_json(),
            "vgg_weights_sha256": getattr(loss_fn.extractor, "weights_sha256", None),
            "final_losses": {k: v for k, v in losses.items() if k != "images_per_s"},
            "heldout_losses": best_heldout,
            "iterations": step,
            "best_step": best["step"] if best else step,
            "stopped_early": stopped_early,
            "device": device.type,
            "instyle_version": __version__,
        }
        save_model(
            model, output, metadata, dtype=torch.float16 if config.save_dtype == "fp16" else None,
            style_targets=style_targets,
        )  # fmt: skip
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(
        model, step, losses, output, log_dir, time.perf_counter() - start, history,
        best_step=best["step"] if best else step, stopped_early=stopped_early,
    )  # fmt: skip


@torch.no_grad()
def _save_samples(model: torch.nn.Module, images: list[Tensor], path: Path, device: torch.device) -> None:
    from instyle.engine.image import save_image

    was_training = model.training
    model.eval()
    row = [resize_long_side(img, 256) for img in images[:4]]
    outputs = [model(img.unsqueeze(0).to(device)).float().cpu()[0] for img in row]
    height = min(img.shape[1] for img in row)
    tiles = [torch.cat([a[:, :height], b[:, :height]], dim=1) for a, b in zip(row, outputs)]
    save_image(torch.cat(tiles, dim=2), path)
    model.train(was_training)


def _write_rows(rows: list[dict[str, float]], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def _write_log(
    history: list[dict[str, float]], log_dir: Path, heldout: list[dict[str, float]] = (), plot: bool = True
) -> None:
    """The CSV log and (with ``plot``) the loss-curve PNG, with the held-out total where evaluated."""
    if not history:
        return
    keys = list(history[0])
    _write_rows(history, log_dir / "log.csv")
    if not plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key in keys:
        if key not in ("step", "images_per_s"):
            ax.plot(steps, [h[key] for h in history], label=key)
    if heldout:
        ax.plot([h["step"] for h in heldout], [h["total"] for h in heldout], "ko-", label="held-out total")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    try:
        write_atomic(log_dir / "loss_curve.png", lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def config_fields() -> list:
    return list(fields(TrainConfig))

"""Training a multi-style generator: several styles at once, or new styles added to a base model.

One :class:`~instyle.engine.models.TransformerNet` whose every instance norm is conditional (one
(gamma, beta) row per style; Dumoulin, Shlens and Kudlur 2017). Each step trains one style on the
whole batch: step ``k`` (counted from 0) takes the trained styles in turn, ``k mod S`` (a function of
the step alone, as the batch is, so a resumed run equals an uninterrupted one), with that style's
targets in the loss. The crops of a step are those a single-style run of the same seed would see.

With ``base`` (a multi-style model file) the new styles' rows are added, each starting at the mean of
the base's rows, and only they train: the convolutions are frozen and the base's rows get no gradient,
so Adam never moves them and they stay as they were, bit for bit.

Everything else is :class:`~instyle.engine.training.trainer.Trainer`'s: checkpoints, exact resume
(the checkpoint also records each style's painting and the base, and a resume compares them),
signals, the NaN guard, the held-out evaluation (per style, and their mean for early stopping),
samples (one grid per style) and DDP. The model file is format version 3
(:mod:`instyle.engine.modelfile`): each style's name, painting sha256 and targets.

:func:`train` is where every style generator's run starts: it picks :class:`Trainer` or
:class:`MultiStyleTrainer` for the config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle.engine.config import ConfigError
from instyle.engine.modelfile import ModelFileError, StyleTargets, is_multi_style, load_generator, read_model_file
from instyle.engine.modelfile import style_name_problem, styles_from_file
from instyle.engine.targets import StyleSource, adopt_target_weights, apply_targets, resolve_style
from instyle.engine.training.config import TrainConfig, TrainingError, TrainResult
from instyle.engine.training.log import save_samples
from instyle.engine.training.loop import run_training
from instyle.engine.training.schedule import cosine_lr
from instyle.engine.training.trainer import Trainer, heldout_loss, stored_style_size

__all__ = ["BaseModel", "MultiStyleTrainer", "read_base", "train"]


def train(
    config: TrainConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    handle_signals: bool = True,
    extractor: torch.nn.Module | None = None,
) -> TrainResult:
    """Train the generator ``config`` describes; ``extractor`` replaces the VGG (tests).

    ``on_step(step, losses)`` follows each step. With ``handle_signals``, SIGINT and SIGTERM end
    the run after the step under way: a checkpoint is written and TrainingInterrupted raised.
    Several styles, or styles added to a ``base``, train a multi-style generator
    (:class:`~instyle.engine.training.multi.MultiStyleTrainer`)."""
    if config.multi_style:
        return run_training(MultiStyleTrainer(config, extractor), on_step, handle_signals)
    return run_training(Trainer(config, extractor), on_step, handle_signals)


@dataclasses.dataclass
class BaseModel:
    """A multi-style model that a run adds styles to: its generator, styles and loss network."""

    path: Path
    generator: torch.nn.Module
    styles: list[StyleTargets]
    sha256: str
    vgg_weights_sha256: str | None


def read_base(path: str) -> BaseModel:
    """The multi-style model ``path``; ConfigError naming ``base`` where it is none."""
    from instyle.engine.weights import file_sha256

    try:
        config, metadata, tensors = read_model_file(path)
    except ModelFileError as error:
        raise ConfigError("base", f"{path}: {error}") from None
    if not is_multi_style(config):
        raise ConfigError(
            "base", f"{path} is a single-style model, not a multi-style one: a base is a model trained with several "
            "styles (train --style A B ...), whose convolutions the new style's rows are trained for"
        )  # fmt: skip
    generator, _ = load_generator(path)
    styles = styles_from_file(Path(path), metadata, tensors)
    vgg = metadata.get("vgg_weights_sha256") or styles[0].vgg_weights_sha256
    return BaseModel(Path(path), generator, styles, file_sha256(Path(path)), vgg)


def _check_distinct(identities: list[list], specs: tuple[str, ...], base: BaseModel | None) -> None:
    """Each new style's name (``identities``: [name, painting sha256] of each) is a valid name, and no
    two styles (the base's included) share a name or painting."""
    held = [(t.style_name, t.style_sha256, f"a style of the base {base.path}") for t in (base.styles if base else [])]
    for spec, (new_name, new_sha) in zip(specs, identities):
        problem = style_name_problem(new_name)
        if problem:
            raise ConfigError("style", f"{spec}: {problem}; rename the painting (its file stem names the style)")
        for name, sha, where in held:
            if name == new_name:
                raise ConfigError("style", f"{spec}: the style name {name!r} is already {where}; rename the painting")
            if sha is not None and sha == new_sha:
                raise ConfigError("style", f"{spec} is the same painting (sha256 {sha[:12]}...) as {where} ({name})")
        held.append((new_name, new_sha, f"the style of {spec}"))


class MultiStyleTrainer(Trainer):
    """A run training a multi-style generator (see the module's text): several styles, or new styles
    added to ``config.base``."""

    # ---------------------------------------------------------------------------- setup

    def _resolve_styles(self, config: TrainConfig) -> TrainConfig:
        """The styles (``self.sources``), the base, and the config with the style size, loss network and
        generator shape they imply."""
        if config.arch != "transformer":
            raise ConfigError("arch", f"{config.arch}: a multi-style model is a transformer generator")
        if config.norm != "instance":
            raise ConfigError("norm", f"{config.norm}: a multi-style model's norms are conditional instance norms; leave norm instance")
        self.base = read_base(config.base) if config.base is not None else None
        self.sources = [resolve_style(spec) for spec in config.styles]
        new = [[source.name, source.style_sha256] for source in self.sources]  # each painting hashed once
        _check_distinct(new, config.styles, self.base)
        # every style in row order, [name, painting sha256]: what the checkpoint records
        self._identities = [[t.style_name, t.style_sha256] for t in (self.base.styles if self.base else [])] + new
        for spec, source in zip(config.styles, self.sources):
            if source.targets is not None:
                config = dataclasses.replace(config, style_size=stored_style_size(source, spec, config.style_size))
        held = []
        if self.base is not None:
            net = self.base.generator.config
            config = dataclasses.replace(config, width=net["width"], num_residual=net["num_residual"])
            held = [StyleSource(t.style_name, t.style_name, path=self.base.path, targets=t) for t in self.base.styles]
        return adopt_target_weights(config, *self.sources, *held)

    @property
    def _first(self) -> int:
        """The first row trained: the base's rows come first and stay as they are."""
        return len(self.base.styles) if self.base is not None else 0

    def _build_model(self) -> None:
        """The multi-style generator (seeded; with a base, the base's with rows for the new styles and
        only those training), its optimizer and learning-rate schedule."""
        from instyle.engine.models import build_generator

        config, devices = self.config, self.devices
        torch.manual_seed(config.seed)
        if self.base is None:
            model = build_generator(
                "transformer", norm="conditional_instance", num_styles=len(self.sources),
                width=config.width, num_residual=config.num_residual,
            )  # fmt: skip
        else:
            model = self.base.generator.with_styles(len(self.sources))
            _train_new_rows_only(model, self._first)
        self.model = model.to(devices.device, memory_format=devices.memory_format)
        self._use_adam(config.lr, cosine_lr(config))
        count = model.num_styles
        # the style of the step under way, updated in place (one tensor for every forward)
        self._weights = torch.zeros(count, device=devices.device)

    def _load_targets(self) -> None:
        """Every style's targets (the file keeps them all), and those of the trained ones ready in the
        loss's form, to be copied into it at each step."""
        extractor_sha = getattr(self.loss_fn.extractor, "weights_sha256", None)
        if self.base is not None and self.base.vgg_weights_sha256 != extractor_sha:
            raise ConfigError(
                "base", f"{self.base.path} was trained with another loss network (VGG weights sha256 "
                f"{self.base.vgg_weights_sha256}) than this run's ({extractor_sha}); train with the base's network "
                "(leave vgg_weights unset to follow it)"
            )  # fmt: skip
        trained = [self._targets_of(source) for source in self.sources]
        self.style_targets = [*(self.base.styles if self.base is not None else []), *trained]
        self._row_targets: dict[int, dict[str, Tensor]] = {}
        self._row_moments: dict[int, dict[str, Tensor]] = {}  # with mean_std_weight only
        layers, moments = self.loss_fn.style_layers, self.loss_fn.moment_term
        for row, (spec, targets) in enumerate(zip(self.config.styles, trained), start=self._first):
            apply_targets(self.loss_fn, targets, what=f"style {spec}")
            self._row_targets[row] = {layer: self.loss_fn.style_target(layer).clone() for layer in layers}
            if self.loss_fn.mean_std_weight > 0:
                self._row_moments[row] = {layer: moments.target(layer).clone() for layer in layers}

    # ---------------------------------------------------------------------------- steps

    def style_of_step(self, step: int) -> int:
        """The row step ``step`` (from 0) trains: the trained styles in turn."""
        return self._first + step % len(self.sources)

    def _use_style(self, row: int) -> None:
        """The forward's style weights and the loss's targets set to style ``row``'s, in place."""
        self._weights.zero_()
        self._weights[row] = 1.0
        for layer, target in self._row_targets[row].items():
            self.loss_fn.style_target(layer).copy_(target)
        for layer, target in self._row_moments.get(row, {}).items():
            self.loss_fn.moment_term.target(layer).copy_(target)

    def _batch(self, step: int) -> Tensor:
        self._use_style(self.style_of_step(step))
        return super()._batch(step)

    def _loss(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self._step_loss(self._train_model(batch, self._weights), batch)

    # ---------------------------------------------------------------------------- evaluation, files

    def _names(self) -> list[str]:
        return [t.style_name for t in self.style_targets]

    def _heldout_terms(self) -> dict[str, float]:
        """Each trained style's held-out loss terms; their mean as the row's total (early stopping)."""
        device, memory_format = self.devices.device, self.devices.memory_format
        per_style = {}
        for row in self._row_targets:
            self._use_style(row)
            per_style[self._names()[row]] = heldout_loss(self.model.single_style(row), self.loss_fn, self.eval_data, device, memory_format)
        terms = {key: sum(t[key] for t in per_style.values()) / len(per_style) for key in next(iter(per_style.values()))}
        terms.update({f"total/{name}": t["total"] for name, t in per_style.items()})
        return terms

    def save_samples(self) -> None:
        for row in self._row_targets:
            path = self.log_dir / f"samples_{self.state.step:06d}_{self._names()[row]}.png"
            save_samples(self.model.single_style(row), self.content_images, path, self.devices.device)

    def _checkpoint_extra(self) -> dict:
        return {"styles": self._identities,
                "base_sha256": self.base.sha256 if self.base is not None else None}  # fmt: skip

    def _check_resumed(self, saved: dict) -> None:
        """The checkpoint's styles (names and paintings, in order) and base are this run's."""
        mine = self._checkpoint_extra()
        for key, what in (("styles", "styles"), ("base_sha256", "base model")):
            if key in saved and saved[key] != mine[key]:
                before = ", ".join(str(n) for n, _ in saved[key]) if key == "styles" else saved[key]
                now = ", ".join(n for n, _ in mine[key]) if key == "styles" else mine[key]
                raise TrainingError(
                    f"resume: {self.checkpoint_path} trained another {what} ({before}; now {now}); give the same "
                    "paintings in the same order and the same base, or start a new run in another log_dir"
                )

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        base = None
        if self.base is not None:
            base = {"path": str(self.base.path), "sha256": self.base.sha256, "styles": [t.style_name for t in self.base.styles]}
        return {
            "training": self.config.to_json(),
            "style_sources": [source.to_json() for source in self.sources],
            "base": base,
            **self._run_metadata(best_heldout, best_step),
        }


def _train_new_rows_only(model: torch.nn.Module, first: int) -> None:
    """Freeze everything but the style rows, and give the rows before ``first`` no gradient (exactly
    zero, so that Adam's moments for them stay zero and its updates of them are zero)."""
    model.requires_grad_(False)
    for param in model.style_parameters():
        param.requires_grad_(True)
        param.register_hook(lambda grad: torch.where(torch.arange(grad.shape[0], device=grad.device)[:, None] >= first, grad, 0.0))

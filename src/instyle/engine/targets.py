"""A style by name: the painting's VGG statistics, stored in a model file, stand in for the painting.

The bundled styles ship generator weights, not paintings. ``instyle train`` also stores the Gram
matrix of each style layer of the painting at the training's style size (the *style targets*, see
:class:`instyle.engine.modelfile.StyleTargets`); :func:`attach_style_targets` adds them to an older model
file, given the painting it was trained on. :func:`resolve_style` turns what a user passes as
``--style`` into a :class:`StyleSource`: an image file, a bundled style name, or a model file with
targets. Library code: raises, prints nothing.
"""

from __future__ import annotations

import dataclasses

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from instyle.engine.config import LossConfig
from instyle.engine.image import load_image, resize_long_side
from instyle.engine.losses import PerceptualLoss, gram_matrix, mean_std
from instyle.engine.modelfile import (
    StyleTargets, read_model_file, styles_from_file, targets_from_file, write_style_targets,
)  # fmt: skip

__all__ = [
    "ATTACH_TOOL",
    "StyleSource",
    "StyleTargets",
    "StyleTargetsError",
    "apply_targets",
    "attach_style_targets",
    "check_targets",
    "compute_style_targets",
    "default_style",
    "resolve_style",
    "settle_loss",
    "weights_for_targets",
]

ATTACH_TOOL = "python tools/attach_style_targets.py"


class StyleTargetsError(ValueError):
    """A style that cannot be resolved, or style targets that do not fit the loss asking for them."""


@dataclass
class StyleSource:
    """What ``--style`` named: an image, or the style targets of a model file (bundled or not)."""

    spec: str  # as the user gave it
    name: str
    image: Tensor | None = None  # (3, H, W) in [0, 1], full size
    path: Path | None = None  # the image file or the model file
    targets: StyleTargets | None = None
    bundled: bool = False

    @property
    def style_sha256(self) -> str | None:
        """sha256 of the painting: of the image file, or as recorded with the targets."""
        if self.targets is not None:
            return self.targets.style_sha256
        if self.path is not None:
            from instyle.engine.weights import file_sha256

            return file_sha256(self.path)
        return None

    def describe(self) -> str:
        if self.targets is None:
            return f"image {self.path if self.path is not None else self.spec}"
        where = f"the bundled {self.name} model" if self.bundled else f"model file {self.path}"
        return (
            f"{self.name}: style statistics stored with {where} "
            f"({', '.join(self.targets.layers)} at {self.targets.style_size} px; no painting needed)"
        )

    def to_json(self) -> dict:
        data = {"spec": self.spec, "name": self.name, "kind": "image" if self.targets is None else "style_targets"}
        data["path"] = str(self.path) if self.path is not None else None
        data["style_sha256"] = self.style_sha256
        if self.targets is not None:
            data.update(bundled=self.bundled, style_size=self.targets.style_size, layers=list(self.targets.layers))
        return data


def _bundled_summary() -> str:
    from instyle.engine.catalog import list_models

    names = list_models()
    if not names:
        return "no styles are bundled in this installation"
    with_targets = list_models(with_style_targets=True)
    return f"bundled styles: {', '.join(names)} (with style targets: {', '.join(with_targets) or 'none'})"


def _how_to_attach(path: Path) -> str:
    return (
        f"attach them with `{ATTACH_TOOL} {path} --style PAINTING` (PAINTING: the image it was trained on), "
        "or pass the style image itself"
    )


def _from_model_file(spec: str, path: Path, bundled: bool, style: str | None = None) -> StyleSource:
    """The style targets of a model file: a single-style file's, or those of ``style`` inside a
    multi-style one (a multi-style file named without a style is an error listing its styles)."""
    _, metadata, tensors = read_model_file(path)  # ModelFileError names the file
    styles = styles_from_file(path, metadata, tensors)
    if styles:
        chosen = [t for t in styles if t.style_name == style]
        if not chosen:
            names = ", ".join(t.style_name for t in styles)
            raise StyleTargetsError(
                f"style {spec!r}: {path} is a multi-style model (styles: {names}); name one of its styles "
                "as a bundled FILE:STYLE name, or give the painting"
            )
        return StyleSource(spec, style, path=path, targets=chosen[0], bundled=bundled)
    targets = targets_from_file(path, metadata, tensors)
    what = f"bundled style {path.stem}" if bundled else f"model file {path}"
    if targets is None:
        raise StyleTargetsError(f"style {spec!r}: {what} carries no style targets; {_how_to_attach(path)}")
    return StyleSource(spec, targets.style_name, path=path, targets=targets, bundled=bundled)


def resolve_style(spec: str | os.PathLike, *, image: bool = True) -> StyleSource:
    """An image file, a bundled style name (``instyle.list_models()``) or a model file with targets.

    A path that exists wins over a bundled name. ``image=False`` skips decoding an image file
    (the caller only wants to know what ``spec`` is). Raises :class:`StyleTargetsError` (unknown
    name, model file without targets), :class:`~instyle.engine.image.ImageError` (unreadable image) or
    :class:`~instyle.engine.modelfile.ModelFileError` (corrupt model file).
    """
    from instyle.engine.catalog import find_bundled

    text = os.fspath(spec)
    if not text:
        raise StyleTargetsError(f"no style given: pass a style image or a bundled style name ({_bundled_summary()})")
    path = Path(text)
    if path.is_dir():
        raise StyleTargetsError(f"style {text!r} is a folder, not an image or model file")
    if path.is_file():
        if path.suffix.lower() == ".safetensors":
            return _from_model_file(text, path, bundled=False)
        return StyleSource(text, path.stem, image=load_image(path) if image else None, path=path)
    found = find_bundled(text)
    if found is not None:
        return _from_model_file(text, found.path, bundled=True, style=found.style)
    kind = "no such file" if (path.suffix or os.sep in text) else "not a file and not a bundled style name"
    raise StyleTargetsError(f"style {text!r}: {kind}; {_bundled_summary()}")


def default_style() -> str | None:
    """The name of the first bundled style that carries style targets, or None."""
    from instyle.engine.catalog import list_models

    names = list_models(with_style_targets=True)
    return names[0] if names else None


def _weights_hint(sha256: str | None) -> str:
    from instyle.engine.weights import source_for_sha256

    name = source_for_sha256(sha256)
    return f"vgg_weights {name}" if name else "vgg_weights PATH of that weight file"


def weights_for_targets(*sources: StyleSource) -> str | None:
    """The named weight source (:data:`instyle.engine.weights.SOURCES`) the stored style targets among
    ``sources`` were computed with, when they name one; else None (images, test stand-ins, weight
    files, or targets of several networks)."""
    from instyle.engine.weights import source_for_sha256

    names = {source_for_sha256(s.targets.vgg_weights_sha256) for s in sources if s.targets is not None}
    names.discard(None)
    return names.pop() if len(names) == 1 else None


def _scale_name(network: str) -> str:
    """``"default"`` is ``$INSTYLE_VGG_WEIGHTS`` (a weight file: scale unknown) or the HED VGG-16."""
    if network == "default" and not os.environ.get("INSTYLE_VGG_WEIGHTS"):
        return "hed-vgg16"
    return network


def settle_loss(loss: LossConfig, *sources: StyleSource) -> LossConfig:
    """``loss`` with its network and style weight settled for ``sources``, as its own fields say:
    with ``follow_style_targets``, the network the stored style targets among ``sources`` were computed
    on; with ``rescale_style_weight``, the style weight scaled from ``style_weight_network`` to the
    network used (:data:`instyle.engine.weights.STYLE_WEIGHT_SCALE`: the ImageNet VGG-19's features are
    larger, so its Gram terms need an eighth of the HED VGG-16's weight for the same balance). Weight
    files, whose scale is unknown, keep the weight. Settling twice changes nothing."""
    from instyle.engine.weights import STYLE_WEIGHT_SCALE

    network = loss.vgg_weights
    if loss.follow_style_targets:
        network = weights_for_targets(*sources) or network
    weight, tuned_for = loss.style_weight, loss.style_weight_network
    to, base = _scale_name(network), _scale_name(tuned_for)
    if loss.rescale_style_weight and to != base and to in STYLE_WEIGHT_SCALE and base in STYLE_WEIGHT_SCALE:
        weight, tuned_for = weight * STYLE_WEIGHT_SCALE[to] / STYLE_WEIGHT_SCALE[base], network
    if (network, weight, tuned_for) == (loss.vgg_weights, loss.style_weight, loss.style_weight_network):
        return loss
    return dataclasses.replace(loss, vgg_weights=network, style_weight=weight, style_weight_network=tuned_for)


def adopt_target_weights(config, *sources: StyleSource):
    """``config`` (a task config nesting a :class:`~instyle.engine.config.LossConfig` as ``loss``) with
    its loss settled for ``sources`` (:func:`settle_loss`)."""
    loss = settle_loss(config.loss, *sources)
    return config if loss is config.loss else dataclasses.replace(config, loss=loss)


def check_targets(targets: StyleTargets, style_layers: Sequence[str], extractor, what: str) -> None:
    """Raise :class:`StyleTargetsError` saying what to do when ``targets`` lack a layer of the loss
    or were computed with other VGG weights than ``extractor``'s."""
    missing = [layer for layer in style_layers if layer not in targets.grams]
    where = targets.source if targets.source is not None else "the model file"
    if missing:
        raise StyleTargetsError(
            f"{what}: the style targets of {targets.style_name} carry {', '.join(targets.layers)} but the loss also "
            f"needs {', '.join(missing)}; pass style_layers with layers they carry (e.g. style_layers "
            f"{' '.join(targets.layers)}), add the layers with `{ATTACH_TOOL} {where} --style PAINTING "
            f"--extra-layers {' '.join(missing)}`, or pass the style image"
        )
    extractor_sha = getattr(extractor, "weights_sha256", None)
    if targets.vgg_weights_sha256 != extractor_sha:
        raise StyleTargetsError(
            f"{what}: the style targets of {targets.style_name} were computed with VGG weights sha256 "
            f"{targets.vgg_weights_sha256} but these VGG weights have sha256 {extractor_sha}; use the weights they "
            f"were computed with ({_weights_hint(targets.vgg_weights_sha256)}), recompute the targets with these "
            "weights, or pass the style image"
        )


def apply_targets(loss_fn: PerceptualLoss, targets: StyleTargets, what: str = "style") -> None:
    """Set ``loss_fn``'s style targets from stored statistics (checked first, with advice)."""
    check_targets(targets, loss_fn.style_layers, loss_fn.extractor, what)
    if loss_fn.mean_std_weight > 0 and targets.moments is None:
        raise StyleTargetsError(
            f"{what}: mean_std_weight {loss_fn.mean_std_weight:g} compares the painting's per-channel means and stds, "
            f"which the stored style targets of {targets.style_name} do not carry; pass the style image"
        )
    loss_fn.set_style_targets(
        targets.grams, vgg_weights_sha256=targets.vgg_weights_sha256, source=f"the style targets of {targets.style_name}",
        moments=targets.moments if loss_fn.mean_std_weight > 0 else None,
    )  # fmt: skip


@torch.no_grad()
def compute_style_targets(
    image: Tensor,
    *,
    style_size: int,
    layers: Sequence[str],
    extractor,
    style_name: str,
    style_sha256: str | None,
    device: torch.device | str | None = None,
) -> StyleTargets:
    """The Gram targets of ``image`` (3, H, W) resized to ``style_size`` (long side), and its
    per-channel means and stds (``moments``), in fp32 whatever autocast is active around the call:
    one forward pass, kept exact."""
    if device is None:
        device = next(iter(extractor.parameters()), torch.zeros(())).device
    device = torch.device(device)
    x = resize_long_side(image, style_size).unsqueeze(0).to(device, torch.float32)  # (1, 3, H, W)
    with torch.autocast(device.type, enabled=False):
        features = extractor(x)
        missing = [layer for layer in layers if layer not in features]
        if missing:
            raise StyleTargetsError(f"the extractor returned no features for layer(s) {missing}")
        grams = {layer: gram_matrix(features[layer].float())[0].cpu() for layer in layers}
        moments = {layer: mean_std(features[layer].float())[0].cpu() for layer in layers}
    return StyleTargets(
        grams=grams,
        moments=moments,
        style_size=int(style_size),
        vgg_weights_sha256=getattr(extractor, "weights_sha256", None),
        style_name=style_name,
        style_sha256=style_sha256,
    )


def _vgg_order(layers: Sequence[str]) -> tuple[str, ...]:
    from instyle.engine.models.vgg import vgg_layer_names

    order = {name: i for i, name in enumerate(vgg_layer_names("vgg19"))}
    return tuple(sorted(dict.fromkeys(layers), key=lambda name: order.get(name, len(order))))


def attach_style_targets(
    model_path: str | os.PathLike,
    painting: str | os.PathLike,
    *,
    extra_layers: Sequence[str] = (),
    extractor=None,
) -> StyleTargets:
    """Compute the style targets of the painting a model file was trained on and write them into the
    file (atomically; weights and metadata kept). The painting must have the sha256 the file records;
    the targets use the recorded style size and layers (plus ``extra_layers``) and the VGG weights the
    file records. ``extractor`` replaces the VGG (tests). Returns the targets written."""
    from instyle.engine.weights import file_sha256

    model_path = Path(model_path)
    painting = Path(painting)
    _, metadata, _ = read_model_file(model_path)
    recorded = metadata.get("style_sha256")
    if not recorded:
        raise StyleTargetsError(f"{model_path} records no style sha256, so the painting cannot be checked")
    if not painting.is_file():
        raise StyleTargetsError(f"style {painting}: no such file")
    actual = file_sha256(painting)
    if actual != recorded:
        raise StyleTargetsError(
            f"style {painting} (sha256 {actual}) is not the painting {model_path} was trained on: its metadata "
            f"records style {metadata.get('style_name')!r} with sha256 {recorded}; pass that image"
        )
    settings = metadata.get("training") or metadata.get("texture") or {}
    settings = {**settings, **(settings.get("loss") or {})}  # the loss fields, flat (older files) or nested
    existing = metadata.get("style_targets") or {}
    style_size = existing.get("style_size") or settings.get("style_size")
    layers = list(settings.get("style_layers") or []) + list(existing.get("layers") or [])
    if not style_size or not layers:
        raise StyleTargetsError(f"{model_path} records no style size or style layers in its metadata")
    layers = _vgg_order([*layers, *extra_layers])
    if extractor is None:
        from instyle.engine.models.vgg import VGGFeatures

        try:
            extractor = VGGFeatures(layers, weights=settings.get("vgg_weights") or "default")
        except ValueError as error:  # an unknown layer name in --extra-layers
            raise StyleTargetsError(f"{model_path}: {error}") from error
    recorded_vgg = metadata.get("vgg_weights_sha256")
    extractor_sha = getattr(extractor, "weights_sha256", None)
    if recorded_vgg != extractor_sha:
        raise StyleTargetsError(
            f"{model_path} was trained with VGG weights sha256 {recorded_vgg} but the weights here have sha256 "
            f"{extractor_sha}; targets from other weights would not match its training"
        )
    targets = compute_style_targets(
        load_image(painting),
        style_size=int(style_size),
        layers=layers,
        extractor=extractor,
        style_name=metadata.get("style_name") or painting.stem,
        style_sha256=actual,
    )
    write_style_targets(model_path, targets)
    return targets


"""The loss of the AdaIN decoder (Huang and Belongie 2017, sec. 6): the content loss between the
decoded image's relu4_1 features and the AdaIN target it was decoded from, and the style loss between
the per-channel means and standard deviations of its features and the painting's at relu1_1, relu2_1,
relu3_1 and relu4_1 (each a mean squared error over the batch and the channels, the mean's and the
std's added).

The paper's VGG-19 is normalized so that every filter's mean activation is 1; ours is the plain
ImageNet VGG-19 on Caffe-scaled pixels, whose mean activations grow from about 20 at relu1_1 to
about 440 at relu4_1, so that relu4_1 alone would outweigh the other layers by hundreds. Each
layer's features are therefore divided by its mean activation (:data:`FEATURE_SCALE`), which gives
every layer the weight it has in the paper, and the paper's weights (content 1, style 10) apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from instyle.engine.losses._precision import no_autocast, upcast
from instyle.engine.losses.terms import mean_std
from instyle.engine.models.adain import CONTENT_LAYER, adain, feature_stats

__all__ = [
    "FEATURE_SCALE", "adain_content_loss", "adain_style_loss", "decoder_loss", "distillation_loss", "style_statistics",
]  # fmt: skip

# Mean activation of each layer of the ImageNet VGG-19 (instyle's "imagenet-vgg19") over every fifth
# training photo and painting of shared/data/train at their stored size (long side 512), rounded:
# photos 20.6, 115, 113, 448; paintings 19.9, 113, 107, 436 (measured 2026-12-06).
FEATURE_SCALE = {"relu1_1": 20.0, "relu2_1": 110.0, "relu3_1": 110.0, "relu4_1": 440.0}


def style_statistics(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The style statistics of each layer's features, scaled: (N, 2, C) per-channel mean and std, fp32."""
    return {layer: mean_std(f) / FEATURE_SCALE[layer] for layer, f in features.items()}


def adain_content_loss(features: Tensor, target: Tensor, layer: str = "relu4_1") -> Tensor:
    """Mean squared error between the decoded image's features and the AdaIN target, both scaled."""
    with no_autocast(features):
        scale = FEATURE_SCALE[layer]
        return torch.nn.functional.mse_loss(upcast(features) / scale, target.float() / scale)


def adain_style_loss(features: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
    """Sum over the layers of ``targets`` (from :func:`style_statistics` of the paintings, one per image)
    of MSE(mean) + MSE(std) between the decoded images' scaled statistics and the painting's."""
    statistics = style_statistics({layer: features[layer] for layer in targets})
    total = torch.zeros((), device=next(iter(statistics.values())).device)
    for layer, target in targets.items():
        # mean over the batch and the channels, summed over {mean, std}
        total = total + (statistics[layer] - target).square().mean(dim=(0, 2)).sum()
    return total


@torch.no_grad()  # photos and paintings in one pass; nothing here needs a gradient
def _adain_targets(encoder: torch.nn.Module, content: Tensor, style: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """The paintings' style statistics per layer and the AdaIN target: the photos' relu4_1
    features with the paintings' mean and std, in fp32."""
    n = len(content)
    features = encoder(torch.cat([content, style]))
    targets = style_statistics({layer: f[n:] for layer, f in features.items()})
    return targets, adain(features[CONTENT_LAYER][:n].float(), *feature_stats(features[CONTENT_LAYER][n:]))


def decoder_loss(
    encoder: torch.nn.Module, decoder: torch.nn.Module, content: Tensor, style: Tensor,
    content_weight: float = 1.0, style_weight: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss of ``decoder`` on pairs of photos ``content`` and paintings ``style`` (both
    (N, 3, H, W) in [0, 1]): the weighted total and its weighted terms ``content`` and ``style``.

    The photos' relu4_1 features take the paintings' statistics (AdaIN, in fp32: the target), the
    decoder turns the target into images, and the encoder judges them; the encoder is frozen, so
    only the decoder's weights get gradients."""  # fmt: skip
    targets, target = _adain_targets(encoder, content, style)
    decoded = encoder(decoder(target))
    content_term = content_weight * adain_content_loss(decoded[CONTENT_LAYER], target, CONTENT_LAYER)
    style_term = style_weight * adain_style_loss(decoded, targets)
    return content_term + style_term, {"content": content_term, "style": style_term}


def distillation_loss(
    encoder: torch.nn.Module, teacher: torch.nn.Module, student: torch.nn.Module, content: Tensor, style: Tensor,
    distill_weight: float = 1.0, style_weight: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss of a distilled pair ``student`` (a :class:`~instyle.engine.models.adain.FastAdaIN`)
    against ``teacher`` (a decoder for the VGG-19 ``encoder``), on photos ``content`` and paintings
    ``style``: the student's image matches the teacher's in the VGG-19 features at relu1_1..relu4_1
    (scaled as the decoder's loss scales them; ``distill``), and matches the painting's statistics as
    the decoder's style loss asks (``style``). Only the student gets gradients."""
    targets, target = _adain_targets(encoder, content, style)
    with torch.no_grad():
        reference = encoder(teacher(target).clamp(0, 1))  # what the teacher shows, as it is shown
    decoded = encoder(student(content, style))
    # per layer the decoder's content term (scaled MSE), against the teacher's features
    distill = sum(adain_content_loss(decoded[layer], reference[layer], layer) for layer in reference)
    distill_term = distill_weight * distill
    style_term = style_weight * adain_style_loss(decoded, targets)
    return distill_term + style_term, {"distill": distill_term, "style": style_term}

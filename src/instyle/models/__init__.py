"""Networks: the VGG feature extractor (generators join later)."""

from .vgg import VGGFeatures

__all__ = ["VGGFeatures"]

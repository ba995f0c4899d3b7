"""Generators (TransformerNet, TextureNet) and their shared blocks."""

from .blocks import ConvNormAct, NormAct
from .texture import TextureNet
from .transformer import ResidualBlock, TransformerNet

__all__ = ["ConvNormAct", "NormAct", "ResidualBlock", "TextureNet", "TransformerNet"]

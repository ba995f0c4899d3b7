"""instyle: instance normalization and fast neural style transfer for PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from . import functional, nn
from .functional import adaptive_instance_norm, instance_norm
from .nn import AdaIN, ConditionalInstanceNorm2d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, make_norm

try:
    __version__ = version("instyle")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
    "functional",
    "nn",
    "instance_norm",
    "adaptive_instance_norm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "ConditionalInstanceNorm2d",
    "AdaIN",
    "make_norm",
]

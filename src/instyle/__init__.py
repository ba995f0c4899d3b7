"""instyle: instance normalization and fast neural style transfer for PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from instyle import functional, nn
from instyle.functional import adaptive_instance_norm, instance_norm
from instyle.nn import AdaIN, ConditionalInstanceNorm2d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, make_norm


def _source_tree_version() -> str:
    """The version in the checkout's pyproject.toml, for a source tree on PYTHONPATH without installation."""
    try:
        import tomllib
        from pathlib import Path

        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"]) + "+source"
    except (ImportError, OSError, KeyError, ValueError):
        return "0.0.0+unknown"


try:
    __version__ = version("instyle")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = _source_tree_version()

# The style engine loads on first use, so that `import instyle` (and `instyle.nn`) stays as
# light as torch: no PIL, matplotlib, scikit-image, safetensors or gradio until they are needed.
_LAZY = {
    "optimize": ("instyle.engine.optimize", "optimize"),
    "OptimizeConfig": ("instyle.engine.optimize", "OptimizeConfig"),
    "train": ("instyle.engine.training", "train"),
    "TrainConfig": ("instyle.engine.training", "TrainConfig"),
    "stylize": ("instyle.engine.inference.api", "stylize"),
    "stylize_video": ("instyle.engine.inference.video", "stylize_video"),
    "stylize_dataset": ("instyle.engine.batch", "stylize_dataset"),
    "load_model": ("instyle.engine.inference.stylize", "load_model"),
    "load_adain": ("instyle.engine.inference.adain", "load_adain"),
    "list_models": ("instyle.engine.catalog", "list_models"),
    "load_image": ("instyle.engine.image", "load_image"),
    "save_image": ("instyle.engine.image", "save_image"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'instyle' has no attribute {name!r}")


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
    *_LAZY,
]

"""The catalog of bundled styles: the model files shipped in ``instyle/styles``, by name; and the
AdaIN decoder (``instyle/styles/adain/decoder.safetensors``, apart so that it is no style name).

A single-style file is listed by its stem (``starry_night``). Each style inside a multi-style file is
listed as ``FILE:STYLE`` (``multi:wave`` for the style ``wave`` of ``multi.safetensors``), and its
bare name (``wave``) stands for it too where no other bundled style has that name; the file's stem
alone (``multi``) names the multi-style model, whose styles a caller mixes (``--style-mix``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from instyle.engine.config import ConfigError
from instyle.engine.modelfile import ModelFileError, has_style_targets, header_styles

STYLES_DIR = Path(__file__).resolve().parents[1] / "styles"
# AdaIN's files (issue #18), apart in styles/adain/ so that none is a style name: the decoder
# (`instyle train-adain`) and its distilled light pair (`instyle train-adain --distill-from`).
ADAIN_DECODER = STYLES_DIR / "adain" / "decoder.safetensors"
ADAIN_FAST = STYLES_DIR / "adain" / "fast.safetensors"
# The painting of the demo's AdaIN rows: the web page's thumbnail of Starry Night (96 px), which
# ships anyway, so that the demo shows AdaIN beside the trained starry_night generator.
ADAIN_DEMO_PAINTING = STYLES_DIR / "thumbs" / "starry_night.jpg"

__all__ = [
    "ADAIN_DECODER", "ADAIN_DEMO_PAINTING", "ADAIN_FAST", "STYLES_DIR", "BundledStyle", "adain_decoder_path", "bundled_styles", "find_bundled",
    "is_bundled_style", "list_models", "resolve_model", "resolve_model_path", "style_thumbnail",
]  # fmt: skip


@dataclass(frozen=True)
class BundledStyle:
    """One bundled style: its name, the file it is in, and its name inside a multi-style file (None for
    a single-style file)."""

    name: str
    path: Path
    style: str | None = None


def bundled_styles() -> list[BundledStyle]:
    """Every bundled style, file by file (sorted), each multi-style file's styles in its own order."""
    found = []
    for path in sorted(STYLES_DIR.glob("*.safetensors")):
        styles = header_styles(path)
        if styles is None:
            found.append(BundledStyle(path.stem, path))
        else:
            found += [BundledStyle(f"{path.stem}:{style}", path, style) for style in styles]
    return found


def list_models(*, with_style_targets: bool = False) -> list[str]:
    """Names of the styles bundled with instyle (``FILE:STYLE`` for those inside a multi-style file);
    ``with_style_targets=True``: only those whose model file carries the painting's style statistics,
    so that the name can stand for the style in ``instyle train/optimize/texture/experiment --style
    NAME`` (see :mod:`instyle.engine.targets`; a multi-style file carries every style's)."""
    styles = bundled_styles()
    if with_style_targets:
        styles = [s for s in styles if s.style is not None or has_style_targets(s.path)]
    return [s.name for s in styles]


def find_bundled(name: str | os.PathLike) -> BundledStyle | None:
    """The bundled style ``name`` names: a listed name, or the bare name of a style inside a
    multi-style file that no other bundled style shares; else None."""
    text = os.fspath(name)
    styles = bundled_styles()
    exact = [s for s in styles if s.name == text]
    if exact:
        return exact[0]
    bare = [s for s in styles if s.style == text]
    return bare[0] if len(bare) == 1 and not any(s.path.stem == text for s in styles) else None


def resolve_model(name_or_path: str | os.PathLike) -> tuple[Path, str | None]:
    """(model file, style inside it or None): a path as given, a bundled style (``starry_night``,
    ``multi:wave``, or ``wave`` where unique) or a bundled multi-style file by its stem (``multi``)."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        return path, None
    found = find_bundled(name_or_path)
    if found is not None:
        return found.path, found.style
    bundled = STYLES_DIR / f"{name_or_path}.safetensors"
    if bundled.exists():
        return bundled, None
    available = ", ".join(list_models()) or "none bundled"
    raise ModelFileError(f"model {name_or_path}: no such file or bundled style (bundled: {available})")


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model file path as given, or the bundled file of that name (for a style inside a multi-style
    file, that file: :func:`resolve_model` also says which style)."""
    return resolve_model(name_or_path)[0]


def style_thumbnail(path: str | os.PathLike | None, style: str | None = None) -> Path | None:
    """The small JPEG of the painting of the bundled model file ``path`` (of its style ``style``
    inside a multi-style file): ``styles/thumbs/NAME.jpg``, made by tools/make_style_thumbs.py;
    None for a file that is not bundled or a style without one."""
    if path is None or Path(path).resolve().parent != STYLES_DIR:
        return None
    thumb = STYLES_DIR / "thumbs" / f"{style or Path(path).stem}.jpg"
    return thumb if thumb.is_file() else None


def is_bundled_style(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a bundled style (and no file of that name exists)."""
    return not Path(name).exists() and find_bundled(name) is not None


def adain_decoder_path(decoder: str | os.PathLike | None = None, fast: bool = False) -> Path:
    """The AdaIN decoder file: ``decoder`` as given, else the bundled one (the distilled pair with
    ``fast``); ConfigError naming the argument ``decoder`` (or ``fast``) when none is bundled."""
    if decoder is not None:
        if fast:
            raise ConfigError("fast", "chooses the bundled distilled model; a decoder file given says which to use")
        return Path(decoder)
    bundled = ADAIN_FAST if fast else ADAIN_DECODER
    if bundled.is_file():
        return bundled
    if fast:
        raise ConfigError(
            "fast", "asks for the bundled distilled AdaIN model, which this build does not have; give a file "
            "trained with `instyle train-adain --distill-from` as decoder",
        )  # fmt: skip
    raise ConfigError(
        "decoder",
        "is needed: none given, and the AdaIN decoder is not bundled in this build; "
        "give a decoder file trained with `instyle train-adain`",
    )

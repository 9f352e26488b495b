"""Frame-exact random access and decoding at the size used.

Ground truth: frame ``i`` of a sequential decode (every frame decoded in order, PyAV). The test
clips give each frame its own picture (a moving block and a brightness ramp), so a neighbour is
far from the right frame; they are written with B-frames in AVI (MPEG-4 Part 2 and H.264: the
container stores decode order only), in MP4 and MKV, and as a raw H.264 stream (no timestamps).
"""

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from seqctx.video.data import VideoError, open_video, read_frames
from seqctx.video.data.backends.base import Blob, scaled_size
from seqctx.video.data.backends.headers import video_track
from seqctx.video.data.decode import read_sequential

from .test_decode import write_clip

DATA = Path(__file__).parents[2] / "data"
REAL = [
    DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4",
    DATA / "kinetics" / "pancake.mkv",
    DATA / "ssv2" / "videos" / "100005.webm",
]
FRAMES = 48
VIDEO_BACKENDS = ["decord", "pyav", "torchcodec"]  # every one, on every machine of the test environment


def numbered_clip(path: Path, codec: str, fmt: str | None = None, bframes: int = 2, gop: int = 12) -> Path:
    """48 frames of 64x48: frame i has a white block at its own place and red level 5 i."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        if codec == "libx264":
            stream.options = {"bf": str(bframes), "g": str(gop), "keyint_min": str(gop)}
        for i in range(FRAMES):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[..., 0] = i * 5
            frame[(i % 6) * 8 : (i % 6) * 8 + 8, (i // 6) * 8 : (i // 6) * 8 + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def sequential(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


CLIPS = {  # name: (codec, container format)
    "xvid_bframes.avi": ("mpeg4", None),
    "h264_bframes.avi": ("libx264", None),
    "mpeg4_bframes.mp4": ("mpeg4", None),
    "h264_bframes.mp4": ("libx264", None),
    "h264_bframes.mkv": ("libx264", None),
    "no_timestamps.h264": ("libx264", "h264"),
}
POSITIONS = [[36, 3, 20, 44, 21, 0, 47, 20], [0, 11, 12, 13, 35, 36], [47, 46, 46, 1]]  # unsorted, runs, repeats


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact")
    return {name: numbered_clip(folder / name, codec, fmt) for name, (codec, fmt) in CLIPS.items()}


def assert_exact(out: torch.Tensor, truth: np.ndarray, indices: list[int], where: str) -> None:
    assert out.shape == (len(indices), *truth.shape[1:]), where
    for k, i in enumerate(indices):
        error = np.abs(out[k].numpy().astype(int) - truth).reshape(len(truth), -1).mean(1)
        assert int(error.argmin()) == i and error[i] < 1.0, f"{where}: frame {i} came back as {int(error.argmin())}"


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
@pytest.mark.parametrize("name", list(CLIPS))
def test_random_access_returns_the_frame_of_a_sequential_decode(clips, name, backend):
    truth = sequential(clips[name])
    assert len(truth) == FRAMES
    if backend in ("decord", "torchcodec") and name.endswith(".h264"):  # they cannot index a raw stream
        reason = "Failed to measure duration/frame-count" if backend == "decord" else "Could not seek file to pts=0"
        with pytest.raises(VideoError, match=f"{backend} cannot open it.*{reason}"):
            open_video(clips[name], backend)
        assert open_video(clips[name]).num_frames == FRAMES  # auto: PyAV reads it
        return
    if backend == "torchcodec" and name.endswith(".avi"):
        with pytest.raises(VideoError, match="torchcodec cannot read AVI frame-exactly"):
            open_video(clips[name], backend)
        return
    source = open_video(clips[name], backend)
    assert source.num_frames == FRAMES
    no_seeking = name.endswith((".avi", ".h264")) or (backend == "decord" and name.startswith("mpeg4"))
    assert source.access == ("sequential" if no_seeking else "seek")
    for indices in POSITIONS:
        assert_exact(source.read(indices), truth, indices, f"{name} {backend} {indices}")
        assert_exact(read_frames(clips[name], indices, backend), truth, indices, f"{name} {backend} fresh")


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_clips_are_exact_at_random_positions(path, backend):
    truth = sequential(path)
    n = len(truth)
    assert open_video(path, backend).num_frames == n
    rng = np.random.default_rng(0)
    indices = [int(i) for i in rng.integers(0, n, 6)] + [n - 1, 0]
    out = read_frames(path, indices, backend).float()
    for k, i in enumerate(indices):
        assert (out[k] - torch.from_numpy(truth[i]).float()).abs().mean() < 1.0, f"{path.name} frame {i}"


def test_scaled_size_keeps_the_aspect_with_an_even_long_side():
    assert scaled_size(1080, 1920, 256) == (256, 456)  # 455.1 -> 456
    assert scaled_size(720, 1280, 256) == (256, 456)  # 455.1
    assert scaled_size(1920, 1080, 256) == (456, 256)  # portrait
    assert scaled_size(256, 340, 256) == (256, 340)
    assert scaled_size(240, 427, 128) == (128, 228)  # 227.7
    assert scaled_size(240, 427, None) == (240, 427)
    assert scaled_size(240, 427, 256) == (240, 427)  # never upscaled
    assert scaled_size(240, 427, 240) == (240, 427)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_decoding_at_a_short_side_is_close_to_full_decoding_then_resizing(path, backend):
    indices = [0, 17, 40]
    full = read_frames(path, indices, backend)  # (3, H, W, 3)
    height, width = scaled_size(full.shape[1], full.shape[2], 128)
    small = read_frames(path, indices, backend, short_side=128)
    assert small.shape == (3, height, width, 3)
    reference = TF.resize(full.permute(0, 3, 1, 2), [height, width], antialias=True).permute(0, 2, 3, 1)
    assert psnr(small, reference) >= 30.0, (path.name, backend, psnr(small, reference))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_backend_gives_the_same_pixels_at_full_size(path):
    """At the stored size the backends agree bit for bit (one FFmpeg decoder, one conversion to
    RGB): ``auto`` may pick any of them without changing what a model sees."""
    indices = [40, 0, 17, 5]
    reference = read_frames(path, indices, "pyav")
    for backend in VIDEO_BACKENDS:
        assert torch.equal(read_frames(path, indices, backend), reference), (path.name, backend)


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_a_decoder_never_upscales(backend):
    """Something-Something's 240p clip at a short side of 256 leaves the decoder as it is stored
    (bit for bit): the clip transform's resize upscales it once."""
    full = read_frames(REAL[2], [0, 20], backend)
    assert full.shape == (2, 240, 427, 3)
    assert torch.equal(read_frames(REAL[2], [0, 20], backend, short_side=256), full)


def test_jpeg_frames_decode_at_a_short_side_through_draft_mode(tmp_path):
    from torchvision.io import encode_jpeg

    frames = read_frames(REAL[0], [0, 30, 60])  # (3, 256, 340, 3)
    for i, f in enumerate(frames):
        (tmp_path / f"{i + 1:05d}.jpg").write_bytes(encode_jpeg(f.permute(2, 0, 1), quality=95).numpy().tobytes())
    full = read_frames(tmp_path, [0, 1, 2], "frames")
    for side in (64, 100):  # draft mode at 1/4 then a resize; a size no DCT scale gives exactly
        small = read_frames(tmp_path, [2, 0], "frames", short_side=side)
        height, width = scaled_size(256, 340, side)
        assert small.shape == (2, height, width, 3)
        reference = TF.resize(full[[2, 0]].permute(0, 3, 1, 2), [height, width], antialias=True).permute(0, 2, 3, 1)
        assert psnr(small, reference) >= 30.0


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotated_videos_keep_their_displayed_orientation_at_a_short_side(tmp_path, rotation):
    path = tmp_path / f"phone{rotation}.mp4"
    write_clip(path, rotation)
    assert video_track(path).rotation == rotation
    shape = (2, 32, 16, 3) if rotation in (90, 270) else (2, 16, 32, 3)
    corner = {0: (0, 0), 90: (-1, 0), 180: (-1, -1), 270: (0, -1)}[rotation]  # the marker, turned counter-clockwise
    for backend in ("decord", "pyav"):
        small = read_frames(path, [0, 6], backend, short_side=16)
        assert small.shape == shape, (backend, small.shape)
        assert small[0, ..., 0][corner] > 200, backend
        full = read_frames(path, [0, 6], backend).permute(0, 3, 1, 2)
        reference = TF.resize(full, list(shape[1:3]), antialias=True).permute(0, 2, 3, 1)
        assert (small.float() - reference.float()).abs().mean() < 8.0, backend


def test_container_headers_name_the_codec_and_size_ffmpeg_finds(clips):
    """MP4/MOV and Matroska/WebM headers are read without FFmpeg (decord's backend opens with
    them); other containers are left to FFmpeg."""
    for path in [*REAL, *clips.values()]:
        with av.open(str(path)) as container:
            codec = container.streams.video[0].codec_context
            expected = (codec.name, codec.width, codec.height, 0, container.format.name)
        track = video_track(path)
        if path.suffix in (".avi", ".h264"):
            assert track is None, path.name
        else:
            assert (track.codec, track.width, track.height, track.rotation, track.container) == expected, path.name
    assert video_track(REAL[0]) == video_track(Blob("x", REAL[0].read_bytes()))


def test_other_containers_have_no_rotation_and_a_sequential_read_is_the_ground_truth(clips):
    truth = sequential(clips["xvid_bframes.avi"])
    for backend in ("decord", "pyav"):
        assert_exact(read_sequential(clips["xvid_bframes.avi"], [40, 2], backend), truth, [40, 2], backend)

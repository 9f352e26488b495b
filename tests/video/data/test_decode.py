import shutil
from pathlib import Path

import pytest
import torch

from seqctx.video.data import VideoError, open_video, read_frames

DATA = Path(__file__).parents[2] / "data"
MP4 = DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"
WEBM = DATA / "ssv2" / "videos" / "100005.webm"
MKV = DATA / "kinetics" / "pancake.mkv"


@pytest.mark.parametrize("path,frames", [(MP4, 332), (WEBM, 53), (MKV, 310)])
def test_decord_reads_real_videos(path, frames):
    source = open_video(path)
    assert source.num_frames == frames
    idx = [5, 0, 5, frames - 1]
    out = read_frames(path, idx)
    assert out.dtype == torch.uint8 and out.shape[0] == 4 and out.shape[-1] == 3
    assert torch.equal(out[0], out[2])  # repeats come back in the requested order
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("path", [MP4, WEBM, MKV])
def test_pyav_seeking_matches_decord_frame_for_frame(path):
    n = open_video(path).num_frames
    idx = [0, 3, n // 2, min(n - 1, n // 2 + 40), n - 2]
    a = read_frames(path, idx, backend="decord")
    b = read_frames(path, idx, backend="pyav")
    assert a.shape == b.shape
    assert (a.float() - b.float()).abs().mean() < 1.0


def test_frame_folder_backend(tmp_path):
    from torchvision.io import decode_jpeg, encode_jpeg

    frames = read_frames(WEBM, list(range(6)))
    folder = tmp_path / "1234"
    folder.mkdir()
    for i, f in enumerate(frames):
        (folder / f"{i + 1:05d}.jpg").write_bytes(encode_jpeg(f.permute(2, 0, 1), quality=95).numpy().tobytes())
    out = read_frames(folder, [0, 5, 2], backend="frames")
    assert out.shape == (3, 240, 427, 3)
    ref = decode_jpeg(torch.frombuffer(bytearray((folder / "00006.jpg").read_bytes()), dtype=torch.uint8))
    assert torch.equal(out[1], ref.permute(1, 2, 0))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_frames(tmp_path / "nope.mp4", [0])
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoError, match="empty.mp4: the file is empty"):
        read_frames(empty, [0])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    for backend in ("decord", "pyav", "torchcodec"):
        with pytest.raises(VideoError, match="corrupt.mp4"):
            read_frames(corrupt, [0], backend=backend)
    with pytest.raises(VideoError, match=r"out of range for 332 frames"):
        read_frames(MP4, [400])
    with pytest.raises(ValueError, match="unknown video backend 'opencv'"):
        open_video(MP4, "opencv")


def test_truncated_video_raises_or_decodes_what_is_there(tmp_path):
    cut = tmp_path / "cut.mp4"
    data = MP4.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="cut.mp4"):
        source = open_video(cut)
        source.read([source.num_frames - 1])


def test_videos_can_be_copied_and_reopened(tmp_path):
    shutil.copy(WEBM, tmp_path / "v.webm")
    assert open_video(tmp_path / "v.webm", "pyav").num_frames == 53


def write_clip(path, rotation=0, title=None, codec="libx264"):
    """12 frames of 32x64 with a white top-left marker and a brightness ramp; ``rotation``: the
    display matrix a phone writes (degrees counter-clockwise); ``title``: container metadata."""
    import av
    import numpy as np

    frames = np.zeros((12, 32, 64, 3), np.uint8)
    frames[:, :8, :8] = 255
    frames[..., 1] += (np.arange(12) * 15).astype(np.uint8)[:, None, None]
    with av.open(str(path), "w") as container:
        if title is not None:
            container.metadata["title"] = title
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_every_backend_returns_the_displayed_orientation(tmp_path, rotation):
    path = tmp_path / f"phone{rotation}.mp4"
    write_clip(path, rotation)
    idx = [0, 5, 11]
    frames = {backend: read_frames(path, idx, backend=backend) for backend in ("decord", "pyav", "torchcodec")}
    shape = (3, 64, 32, 3) if rotation in (90, 270) else (3, 32, 64, 3)
    assert all(f.shape == shape for f in frames.values()), {k: v.shape for k, v in frames.items()}
    assert all((f.float() - frames["pyav"].float()).abs().mean() < 1.0 for f in frames.values())
    marker = frames["pyav"][0, ..., 0] > 200  # where the top-left marker is displayed
    corner = {0: (0, 0), 90: (-1, 0), 180: (-1, -1), 270: (0, -1)}[rotation]  # counter-clockwise turns
    assert marker[corner] and marker.sum() == 64


def test_pyav_opens_videos_whose_metadata_is_not_utf8(tmp_path):
    path = tmp_path / "old.avi"
    write_clip(path, title="QQQQQQ", codec="mpeg4")
    data = path.read_bytes()
    assert data.count(b"QQQQQQ") == 1
    path.write_bytes(data.replace(b"QQQQQQ", b"\xd3\xd3\xd3\xd3\xd3\xd3"))  # a Latin-1 title, as HMDB51's AVIs
    a, b = read_frames(path, [0, 6], backend="decord"), read_frames(path, [0, 6], backend="pyav")
    assert a.shape == b.shape == (2, 32, 64, 3) and (a.float() - b.float()).abs().mean() < 1.0

"""A synthetic motion data set: real H.264 videos of moving shapes, annotated like SSv2.

Classes come in time-reversed pairs (left/right, up/down, towards/away, clockwise/anticlockwise,
appearing/disappearing): a video of one class played backwards is a video of its twin, drawn
with the same probability. A model blind to frame order (TSN's average of frame scores) sees the
same set of frames for both classes of a pair and cannot beat chance between them; temporal
models (TSM, CGC with temporal context, 3D models) can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqctx.errors import DataError

from .datasets import ssv2_template

MOTIONS: list[tuple[str, str]] = [
    ("Moving [something] from left to right", "Moving [something] from right to left"),
    ("Moving [something] up", "Moving [something] down"),
    ("Pushing [something] towards the camera", "Pulling [something] away from the camera"),
    ("Turning [something] clockwise", "Turning [something] anticlockwise"),
    ("[Something] appearing", "[Something] disappearing"),
]
SHAPES = ("circle", "square", "triangle")
MAX_CLASSES = 2 * len(MOTIONS)


@dataclass(frozen=True)
class SynthConfig:
    classes: int = 10
    videos_per_class: int = 40
    num_frames: int = 24
    size: int = 96
    fps: int = 12
    gop: int = 12
    val_fraction: float = 0.25
    seed: int = 0


def class_templates(classes: int) -> list[str]:
    if not 2 <= classes <= MAX_CLASSES:
        raise DataError(f"the synthetic set has 2 to {MAX_CLASSES} classes, got {classes}")
    return [t for pair in MOTIONS for t in pair][:classes]


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Boolean mask of a shape centred at the origin of ``(xx, yy)``, rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    if shape == "circle":  # a circle with a notch, so that rotation is visible
        return (u**2 + v**2 <= radius**2) & ~((u > 0.3 * radius) & (np.abs(v) < 0.25 * radius))
    if shape == "square":
        return (np.abs(u) <= radius * 0.8) & (np.abs(v) <= radius * 0.8) & ~((u > 0.2 * radius) & (v > 0.2 * radius))
    # an isosceles triangle pointing along +u
    return (u >= -0.6 * radius) & (u <= radius) & (np.abs(v) <= 0.7 * (radius - u) / 1.6 + 1e-6)


def render_video(label: int, cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Frames ``(T, H, W, 3)`` uint8 of class ``label`` and the shape's name."""
    size, t = cfg.size, cfg.num_frames
    motion, reverse = divmod(label, 2)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    background = rng.integers(0, 90, 3).astype(np.float32)
    texture = rng.normal(0, 12, (size, size, 1)).astype(np.float32)  # static: carries no time
    colour = rng.integers(140, 256, 3).astype(np.float32)
    radius = size * rng.uniform(0.12, 0.18)
    lo, hi = rng.uniform(0.2, 0.4), rng.uniform(0.6, 0.8)
    cross = rng.uniform(0.3, 0.7) * size
    angle0 = rng.uniform(0, 2 * np.pi)
    progress = np.linspace(0.0, 1.0, t)
    if reverse:
        progress = progress[::-1]  # the twin class is the same motion played backwards
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((t, size, size, 3), np.uint8)
    for i, p in enumerate(progress):
        cx, cy, r, angle, alpha = size / 2, size / 2, radius, angle0, 1.0
        if motion == 0:
            cx, cy = (lo + (hi - lo) * p) * size, cross
        elif motion == 1:  # "up": y decreases
            cx, cy = cross, (hi - (hi - lo) * p) * size
        elif motion == 2:
            r = radius * (0.6 + 1.0 * p)
        elif motion == 3:
            angle = angle0 + 1.5 * np.pi * p  # image y points down: positive angles turn clockwise
        else:
            alpha = p
        mask = _shape_mask(shape, xx - cx, yy - cy, r, angle)[..., None]
        img = background + texture
        img = np.where(mask, (1 - alpha) * img + alpha * colour, img)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, shape


def write_video(path: Path, frames: np.ndarray, fps: int, gop: int) -> None:
    """H.264 (libx264, yuv420p) mp4 with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(gop), "crf": "18", "preset": "veryfast", "threads": "1"}  # 1 thread: deterministic
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


ANNOTATION_FILES = ("labels.json", "classes.txt", "train.json", "validation.json", "train.txt", "validation.txt")


def generate_synthetic(
    out_dir: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = False, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``videos/{id}.mp4`` under ``out_dir`` with two sets of annotations: ``labels.json``,
    ``train.json`` and ``validation.json`` (the SSv2 formats), and ``classes.txt``, ``train.txt`` and
    ``validation.txt`` (list files, ``videos/{id}.mp4 label``, paths relative to ``out_dir``: the
    layout of "your own videos"). Deterministic given ``cfg.seed``. Returns the paths.

    A file of those names already in ``out_dir`` (a user's own ``train.txt``, say) is a
    :class:`DataError` naming it, before anything is written, unless ``overwrite``."""
    from tqdm import tqdm

    existing = [name for name in ANNOTATION_FILES if (Path(out_dir) / name).exists()]
    if existing and not overwrite:
        raise DataError(
            f"{out_dir} already holds {', '.join(existing)}: the synthetic set would write over them; choose "
            "another folder, or --overwrite"
        )

    if cfg.size % 32:
        # decord 0.6 misreads some small H.264 frame sizes (16, 24, 48, 72 seen here); multiples of 32 are safe
        raise DataError(f"size must be a multiple of 32 (decord 0.6 cannot read some other sizes), got {cfg.size}")
    templates = class_templates(cfg.classes)
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, object]]] = {"train": [], "validation": []}
    n_val = max(1, round(cfg.videos_per_class * cfg.val_fraction))
    jobs = [(label, k) for label in range(cfg.classes) for k in range(cfg.videos_per_class)]
    for label, k in tqdm(jobs, desc="synthesising videos", disable=not progress):
        rng = np.random.default_rng([cfg.seed, label, k])
        frames, shape = render_video(label, cfg, rng)
        vid = f"{label:02d}{k:05d}"
        write_video(out / "videos" / f"{vid}.mp4", frames, cfg.fps, cfg.gop)
        template = templates[label]
        entry = {
            "id": vid,
            "label": template.replace("[something]", shape).replace("[Something]", shape.capitalize()),
            "template": template,
            "placeholders": [shape],
        }
        splits["validation" if k < n_val else "train"].append(entry)
    paths = {"labels": out / "labels.json", "root": out / "videos"}
    labels = {ssv2_template(t): str(i) for i, t in enumerate(templates)}
    paths["labels"].write_text(json.dumps(labels, indent=1))
    paths["classes"] = out / "classes.txt"
    paths["classes"].write_text("".join(name + "\n" for name in labels))
    index = {t: i for i, t in enumerate(templates)}
    for split, entries in splits.items():
        paths[split] = out / f"{split}.json"
        paths[split].write_text(json.dumps(entries, indent=1))
        paths[f"{split}_list"] = out / f"{split}.txt"
        paths[f"{split}_list"].write_text("".join(f"videos/{e['id']}.mp4 {index[e['template']]}\n" for e in entries))
    return paths

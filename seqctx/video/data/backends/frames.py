"""Folders of image frames (JPEG or PNG), as Something-Something v1 ships and as mmaction2's and
TSM's extraction tools write them (``img_00001.jpg``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .base import VideoError, VideoSource, register_backend, scaled_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z]+)$")


def frame_template(names: list[str]) -> tuple[str, int]:
    """The template (``str.format`` of one integer) and the first number of the numbered image
    files among ``names``: ``img_00001.jpg, img_00002.jpg`` -> ``("img_{:05d}.jpg", 1)``,
    ``0.png .. 10.png`` -> ``("{:d}.png", 0)``. The prefix and suffix shared by most files decide
    (a stray ``cover.jpg`` does not); numbers written with leading zeros are padded to that width."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match and match.group(3).lower() in IMAGE_SUFFIXES:
            groups.setdefault((match.group(1), match.group(3)), []).append(match.group(2))
    if not groups:
        raise ValueError("no numbered image files (e.g. 00001.jpg, img_00001.jpg, 0.png)")
    (prefix, suffix), numbers = max(groups.items(), key=lambda item: len(item[1]))
    padded = [len(n) for n in numbers if n.startswith("0") and len(n) > 1]
    digits = f"{{:0{min(padded)}d}}" if padded else "{:d}"
    escape = str.maketrans({"{": "{{", "}": "}}"})
    return f"{prefix.translate(escape)}{digits}{suffix.translate(escape)}", min(int(n) for n in numbers)


def check_frame_template(template: str) -> None:
    """A ``ValueError`` unless ``template`` names a frame file from one integer (``img_{:05d}.jpg``)."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        ok = len(fields) == 1 and template.format(1) != template.format(2)
    except (ValueError, IndexError, KeyError):
        ok = False
    if not ok:
        raise ValueError(
            f"is {template!r}; expected a file name with one integer field, e.g. img_{{:05d}}.jpg or {{:06d}}.png"
        )


def frame_numbers(names: list[str], template: str) -> list[int]:
    """The numbers of the files among ``names`` that ``template`` names exactly, sorted."""
    head, _, tail = template.partition("{")
    spec, _, rest = tail.partition("}")
    pattern = re.compile(re.escape(head.replace("{{", "{")) + r"(\d+)" + re.escape(rest.replace("}}", "}")) + "$")
    found = (pattern.match(name) for name in names)
    return sorted(int(m.group(1)) for m in found if m and template.format(int(m.group(1))) == m.group(0))


@register_backend
class FrameFolderSource(VideoSource):
    """A folder of image frames ``{folder}/{template.format(i + start)}``. ``template`` (e.g.
    ``img_{:05d}.jpg``) and ``start`` (the first frame's number) are found from the folder's own
    files when not given (:func:`frame_template`). A folder whose frames are not numbered without
    gaps from ``start`` is a :class:`VideoError` naming the first missing ones (a gap would shift
    every later frame index). With ``short_side``, PIL's draft mode decodes a JPEG at the smallest
    1/2, 1/4 or 1/8 scale that is not below the size, then a bilinear resize gives it exactly."""

    name = "frames"

    def __init__(
        self,
        folder: str | Path,
        num_threads: int = 1,
        short_side: int | None = None,
        template: str | None = None,
        start: int | None = None,
    ) -> None:
        self.path = self.folder = Path(folder)
        self.short_side = short_side
        if not self.folder.is_dir():
            raise VideoError(f"{folder}: no such frame folder")
        names = os.listdir(self.folder)
        if template is not None:
            check_frame_template(template)
        else:
            try:
                template, found = frame_template(names)
            except ValueError as e:
                raise VideoError(f"{folder}: {e} in the frame folder") from None
            start = found if start is None else start
        numbers = frame_numbers(names, template)
        if not numbers:
            raise VideoError(f"{folder}: the frame folder holds no frame named like {template.format(1)!r}")
        start = numbers[0] if start is None else start
        self.template, self.start, self.num_frames = template, start, len(numbers)
        present = set(numbers)
        missing = [i for i in range(start, start + len(numbers)) if i not in present]
        if missing:
            first, last = template.format(start), template.format(start + len(numbers) - 1)
            named = ", ".join(template.format(i) for i in missing[:3])
            raise VideoError(
                f"{folder}: {len(numbers)} frames, but {len(missing)} of {first}..{last} are missing "
                f"({named}{', ...' if len(missing) > 3 else ''}): frames must be numbered without gaps "
                "(data.frame_template and data.first_frame say how they are named)"
            )

    def _image(self, path: Path) -> torch.Tensor:
        if self.short_side is None and path.suffix.lower() in (".jpg", ".jpeg"):
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB).permute(1, 2, 0)
        from PIL import Image

        with Image.open(path) as image:
            height, width = scaled_size(image.height, image.width, self.short_side)
            image.draft("RGB", (width, height))  # JPEG: decode at a DCT scale >= the size
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
            return torch.from_numpy(np.asarray(rgb).copy())

    def decode(self, unique: list[int]) -> torch.Tensor:
        frames = []
        for i in unique:
            path = self.folder / self.template.format(i + self.start)
            try:
                frames.append(self._image(path))
            except Exception as e:
                raise VideoError(f"{path}: cannot decode the image frame ({e})") from e
        return torch.stack(frames)

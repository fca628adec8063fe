"""Image files for vision tasks and objectives: a TSV of ``label<TAB>image`` rows, images read
with Pillow, resized and normalised with torch.

An image is returned as float32 ``[channels, size, size]`` in ViT's convention: values scaled to
[0, 1], then normalised with mean 0.5 and standard deviation 0.5 per channel (the defaults of
HuggingFace's ``ViTImageProcessor``), so pixels lie in [-1, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.fileio import read_input

COLUMNS = ("label", "image")
MEAN = 0.5
STD = 0.5
# Pillow's conversion mode for each supported number of channels.
MODES = {1: "L", 3: "RGB"}


@dataclass
class ImageData:
    """The rows of an image TSV, column by column.

    Attributes:
        path: the TSV file read.
        images: each row's image file, resolved against the TSV's folder.
        labels: each row's label as written, or None for a file without labels.
        lines: the line of the TSV that holds each row (the header is line 1).
        skipped: the bad rows left out (``skip_bad_rows``), each ``(line, what is wrong)``.
    """

    path: Path
    images: list[Path]
    labels: list[str] | None
    lines: list[int]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def where(self, row: int) -> tuple[Path, int]:
        """The TSV file and line of row ``row``, for error messages."""
        return self.path, self.lines[row]


def read_image_tsv(
    path: str | Path,
    label_set: list[str] | None = None,
    require_labels: bool = True,
    skip_bad_rows: bool = False,
) -> ImageData:
    """Read a TSV whose header names the columns ``label`` and ``image`` (any order).

    Image paths are relative to the TSV's folder (or absolute). Every image is opened once here
    (its header only), so a missing file or one that is not an image is reported before
    training starts.

    Args:
        path: the TSV file (UTF-8).
        label_set: when given, every label must be one of these.
        require_labels: the file must have a ``label`` column (files to predict on need not).
        skip_bad_rows: leave out the rows that would be a DataError (listed in ``skipped``)
            instead of raising; a bad header or a file without a good row still raises.

    Raises:
        DataError: naming the TSV and line: a bad header, a row with the wrong number of fields,
            an empty or unknown label, a missing or unreadable image, an empty file.
    """
    path = Path(path)
    lines = read_input(path).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        raise DataError("file is empty; expected a header label<TAB>image", path)
    header = _decode(lines[0], path, 1).lstrip("\ufeff").split("\t")
    _check_header(header, path, require_labels)
    folder = path.parent
    data = ImageData(path, [], [] if "label" in header else None, [])
    allowed = (set(label_set), label_set) if label_set is not None else None
    for number, raw in enumerate(lines[1:], start=2):
        try:
            image, label = _read_row(raw, header, folder, allowed, path, number)
        except DataError as error:
            if not skip_bad_rows:
                raise
            data.skipped.append((number, str(error).removeprefix(f"{path}:{number}: ")))
            continue
        data.images.append(image)
        data.lines.append(number)
        if data.labels is not None and label is not None:
            data.labels.append(label)
    if not data.images:
        why = f"all {len(data.skipped)} rows are bad" if data.skipped else "a header but no rows"
        raise DataError(f"the file has {why}", path, 2)
    return data


def _read_row(
    raw: bytes,
    header: list[str],
    folder: Path,
    allowed: tuple[set[str], list[str]] | None,
    path: Path,
    number: int,
) -> tuple[Path, str | None]:
    """One row's image file (checked: it exists and Pillow reads its header) and label;
    ``allowed``: the label set (as a set for the test, as a list for the message) or None."""
    fields = _decode(raw, path, number).split("\t")
    if len(fields) != len(header):
        raise DataError(
            f"expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(fields)}",
            path,
            number,
        )
    row = dict(zip(header, fields))
    label = row.get("label")
    if label == "":
        raise DataError("the label is empty", path, number)
    if label is not None and allowed is not None and label not in allowed[0]:
        raise DataError(
            f"label {label!r} is not one of the labels: {', '.join(allowed[1])}", path, number
        )
    if row["image"] == "":
        raise DataError("the image path is empty", path, number)
    image = folder / row["image"]
    _check_image(image, path, number)
    return image, label


def label_set(data: ImageData) -> list[str]:
    """The distinct labels, sorted; numbers sort by value ("2" before "10")."""
    if data.labels is None:
        raise DataError("the file has no label column", data.path)
    distinct = set(data.labels)
    for number in (int, float):
        try:
            return sorted(distinct, key=number)
        except ValueError:
            continue
    return sorted(distinct)


def load_image(
    file: Path, image_size: int, channels: int, where: tuple[Path, int] | None = None
) -> torch.Tensor:
    """One image as normalised float32 ``[channels, image_size, image_size]``.

    Any size and colour mode Pillow reads is accepted: it is converted to grey (1 channel) or
    RGB (3), then resized with bilinear, anti-aliased interpolation (non-square images are
    stretched to the square: ViT takes square inputs).

    Args:
        file: the image file.
        image_size: side of the output in pixels.
        channels: 1 or 3.
        where: the TSV file and line that named ``file``, for error messages.
    """
    return normalise(resized_image(file, image_size, channels, where))


def resized_image(
    file: Path, image_size: int, channels: int, where: tuple[Path, int] | None = None
) -> torch.Tensor:
    """One image as float32 ``[channels, image_size, image_size]`` in [0, 1], not normalised
    (``load_image`` without its last step; masked-patch shards store it as bytes)."""
    if channels not in MODES:
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    path, line = where if where is not None else (file, None)
    pixels = _decode_image(file, MODES[channels], path, line)  # [H, W] or [H, W, 3] uint8
    tensor = torch.from_numpy(pixels).float().div_(255.0)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)  # [c, H, W]
    if tuple(tensor.shape[1:]) != (image_size, image_size):
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=(image_size, image_size), mode="bilinear", antialias=True
        )[0].clamp_(0.0, 1.0)
    return tensor  # [c, image_size, image_size]


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] → ViT's normalised values in [-1, 1]."""
    return (pixels - MEAN) / STD


def load_images(data: ImageData, rows: list[int], image_size: int, channels: int) -> torch.Tensor:
    """The images of ``rows`` stacked: ``[len(rows), channels, image_size, image_size]``."""
    return torch.stack(
        [load_image(data.images[r], image_size, channels, data.where(r)) for r in rows]
    )


def _decode_image(file: Path, mode: str, path: Path, line: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    what = f"image {file}" if line is not None else "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return np.array(image.convert(mode))  # a writable copy for torch
    except FileNotFoundError:
        raise DataError(f"{what}: no such file", path, line) from None
    except UnidentifiedImageError:
        raise DataError(f"{what}: not an image Pillow can read", path, line) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as err:
        raise DataError(f"{what}: cannot be decoded ({err})", path, line) from None


def _check_image(file: Path, path: Path, line: int) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file):
            pass  # reads the header only; the pixels are decoded when the image is used
    except FileNotFoundError:
        raise DataError(f"image {file}: no such file", path, line) from None
    except IsADirectoryError:
        raise DataError(f"image {file}: is a folder, not a file", path, line) from None
    except UnidentifiedImageError:
        raise DataError(f"image {file}: not an image Pillow can read", path, line) from None
    except OSError as err:
        raise DataError(
            f"image {file}: cannot be read ({err.strerror or err})", path, line
        ) from None


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


def _check_header(header: list[str], path: Path, require_labels: bool) -> None:
    for name in header:
        if name not in COLUMNS:
            raise DataError(f"unknown column {name!r}; expected a header label<TAB>image", path, 1)
    if len(set(header)) != len(header):
        raise DataError(f"a column is named twice in the header {header}", path, 1)
    for needed in ("label", "image") if require_labels else ("image",):
        if needed not in header:
            raise DataError(
                f"the header {header} lacks the {needed!r} column; expected label<TAB>image",
                path,
                1,
            )

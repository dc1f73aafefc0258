"""Encoded images to model rows: decode (bounded), resize, centre crop, normalise, layout.

Pillow decodes (lazily imported: the ``image`` extra), restricted to :data:`ALLOWED_FORMATS`
(``Image.open(formats=...)``): an upload never reaches another of Pillow's plugins (EPS
would reach Ghostscript). The declared size is read from the header and checked against
``max_pixels`` before any pixel is decoded, so a small file declaring 20000 x 20000 costs
nothing; the memory decoding will hold (:func:`decoded_bytes`) is charged to the request
before it is allocated (``charge``: the server's in-flight cap), then traded for the model
row once it is made. Resize and crop follow torchvision's PIL path for evaluation (shorter
side to ``resize`` with bilinear filtering, then a centre crop), so a model trained with
``Resize(256) + CenterCrop(224)`` sees what it was evaluated on.

Decoding runs on pool threads, so nothing here touches the process-wide warning filters
(``warnings.catch_warnings`` is not thread-safe): Pillow's warnings about an input are
silenced once at server start (:func:`ignore_pillow_warnings`), and where warnings are
errors (``python -W error``, pytest) one raised while decoding is the input's fault (400; a
declared size over Pillow's own limit: 413).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferpack.errors import InvalidInputError, MissingExtraError, PayloadTooLargeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

# What browsers, phones and cameras send (a phone's JPEG with a depth map or a burst, MPO,
# opens as JPEG). TIFF is left out: libtiff's many codecs have the longest CVE record of the
# decoders Pillow wraps, and no browser or phone uploads TIFF (docs/processing.md).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
FORMATS = "JPEG, PNG, WebP, BMP, GIF"
_EXIF_ORIENTATION = 0x0112
# Pillow reads this much of a file to pick its plugin (Image.open's prefix).
_PREFIX_BYTES = 16
# The RGB array (3 bytes a pixel) and the bytes Pillow's array interface makes it from (3,
# joined from chunks that briefly coexist with them: 4 in all, as measured).
_ARRAY_BYTES_PER_PIXEL = 7
Charge = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ImageTransform:
    """How a point in the model input maps back to the uploaded image."""

    width: int  # the uploaded image, pixels
    height: int
    scale_x: float  # resized = original * scale
    scale_y: float
    crop_x: int  # top-left of the crop in the resized image
    crop_y: int

    @classmethod
    def identity(cls, width: int, height: int) -> ImageTransform:
        return cls(width, height, 1.0, 1.0, 0, 0)

    def to_original(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel coordinates (pixel centres at integers) to the uploaded
        image's: undo the crop offset, then the scale (about pixel centres)."""
        original_x = (np.asarray(x, dtype=np.float64) + self.crop_x + 0.5) / self.scale_x - 0.5
        original_y = (np.asarray(y, dtype=np.float64) + self.crop_y + 0.5) / self.scale_y - 0.5
        return original_x, original_y


@dataclass(frozen=True, slots=True)
class ImagePreprocess:
    """What a model's image input needs (model.yaml ``preprocess.image``)."""

    resize: tuple[int, int] | int | None = None  # int: shorter side; (h, w): exactly
    crop: tuple[int, int] | None = None  # (h, w), centred, after the resize
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    layout: str = "CHW"  # or HWC
    color: str = "RGB"  # or BGR
    datatype: str = "FP32"  # FP32, FP16 or UINT8 (UINT8: pixels as they are)
    max_pixels: int = 50_000_000
    # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is that much
    # larger than the resize needs (a 12 MP photo to 256: 40 ms instead of 201 ms, one thread).
    jpeg_draft: bool = False

    def draft_side(self) -> int | None:
        """The side both decoded dims must keep (so the resize never upsamples), or None."""
        if not self.jpeg_draft or self.resize is None:
            return None
        return self.resize if isinstance(self.resize, int) else max(self.resize)

    def output_dims(self) -> tuple[int, int, int] | None:
        """The row's dims when fixed by the crop or an exact resize (else None)."""
        size = self.crop or (self.resize if isinstance(self.resize, tuple) else None)
        if size is None:
            return None
        return (3, *size) if self.layout == "CHW" else (*size, 3)


def _pillow() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as error:
        raise MissingExtraError("Pillow", "image") from error
    return Image, ImageOps


def ignore_pillow_warnings() -> None:
    """Silence Pillow's warnings about inputs (a declared size over its
    ``MAX_IMAGE_PIXELS``, corrupt EXIF, palette transparency) for the whole process: our own
    limits decide. Call once at server start, before decoding threads run: changing the
    filters is not thread-safe, so it is never done per image."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return
    warnings.filterwarnings("ignore", module=r"PIL\.")


def _name(index: int | None) -> str:
    return "image" if index is None else f"image {index}"


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes decoding a ``width`` x ``height`` image of Pillow ``mode`` holds at its peak:
    Pillow's pixels (4 bytes each; 1 for bilevel, grayscale and palette images), their RGB
    conversion (4 more, unless already RGB) and the RGB array with the bytes Pillow's array
    interface builds it from (7).

    Far more than width x height x 3: measured at the peak (VmHWM) 11.0 bytes a pixel for
    a 12 MP RGB JPEG (this gives 11) and 9.9 for a grayscale one (this gives 12)."""
    stored = 1 if mode in ("1", "L", "P") else 4
    converted = 0 if mode == "RGB" else 4
    return width * height * (stored + converted + _ARRAY_BYTES_PER_PIXEL)


def decode_image(data: bytes, max_pixels: int, index: int | None = None) -> np.ndarray:
    """uint8 H x W x 3 RGB, EXIF orientation applied. 400 for empty, undecodable, truncated
    data or a format not allowed; 413 for a declared size over ``max_pixels`` (checked from
    the header, before decoding)."""
    return decode_image_sized(data, max_pixels, index)[0]


def decode_image_sized(
    data: bytes,
    max_pixels: int,
    index: int | None = None,
    draft_side: int | None = None,
    charge: Charge | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, and the (width, height) the image has at full resolution as
    displayed; with ``draft_side`` a JPEG may be decoded smaller, down to that side.
    ``charge`` is called with :func:`decoded_bytes` before any pixel is decoded (it raises
    to refuse: OverloadedError when the server's in-flight cap is full)."""
    image_module, image_ops = _pillow()
    name = _name(index)
    image = _open(image_module, data, max_pixels, name)
    width, height = image.size
    try:
        if draft_side is not None and image.format == "JPEG":
            image.draft("RGB", (draft_side, draft_side))
        if charge is not None:
            charge(decoded_bytes(*image.size, image.mode))
        image.load()
        rotated = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        image = image_ops.exif_transpose(image) or image
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        del image
        pixels = np.asarray(rgb, dtype=np.uint8)
    except image_module.DecompressionBombError as error:
        raise PayloadTooLargeError(f"{name}: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError, Warning) as error:
        text = str(error)
        what = "is truncated" if "truncat" in text.lower() else "cannot be decoded"
        raise InvalidInputError(f"{name} {what}: {text}") from None
    full_size = (height, width) if rotated else (width, height)
    return pixels, full_size


def _open(image_module: Any, data: bytes, max_pixels: int, name: str) -> PILImage.Image:
    """The image with its header read (no pixel decoded), of an allowed format and
    declaring at most ``max_pixels``."""
    if not data:
        raise InvalidInputError(f"{name} is empty (0 bytes)")
    try:
        image: PILImage.Image = image_module.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning) as error:
        # Pillow's own guard (its MAX_IMAGE_PIXELS; the warning where warnings are errors)
        # fires at open, before ours.
        raise PayloadTooLargeError(
            f"{name} declares too many pixels: {error} (limit "
            f"{max_pixels} pixels: preprocess.image.max_pixels)"
        ) from None
    except (OSError, ValueError, SyntaxError, Warning) as error:
        if "truncat" in str(error).lower():
            raise InvalidInputError(f"{name} is truncated: {error}") from None
        refused = _refused_format(image_module, data)
        if refused is not None:
            raise InvalidInputError(
                f"{name} is {refused}, not an accepted image format ({FORMATS})"
            ) from None
        unknown = isinstance(error, image_module.UnidentifiedImageError)
        detail = "its format is not recognised" if unknown else str(error)
        raise InvalidInputError(f"{name} is not a decodable image ({FORMATS}): {detail}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"{name} declares {width}x{height} = {width * height} pixels, over the "
            f"limit of {max_pixels} (preprocess.image.max_pixels)"
        )
    return image


def _refused_format(image_module: Any, data: bytes) -> str | None:
    """The format another Pillow plugin recognises ``data`` as, from its first bytes only
    (each plugin's signature check; nothing is parsed), or None."""
    image_module.init()
    prefix = data[:_PREFIX_BYTES]
    for format_id in image_module.ID:
        accept = image_module.OPEN[format_id][1]
        if format_id in ALLOWED_FORMATS or accept is None:
            continue  # without a signature check (TGA) any bytes would "match"
        try:
            matched = accept(prefix)
        except Exception:  # a signature check is not meant to raise; treat as no match
            continue
        if matched and not isinstance(matched, str):
            return str(format_id)
    return None


def _resized_size(width: int, height: int, resize: tuple[int, int] | int) -> tuple[int, int]:
    """(width, height) after the resize: an int sets the shorter side (torchvision's rule:
    the longer side is int(size * long / short))."""
    if isinstance(resize, tuple):
        return resize[1], resize[0]
    if width <= height:
        return resize, max(1, int(resize * height / width))
    return max(1, int(resize * width / height)), resize


def preprocess_image(
    pixels: np.ndarray, spec: ImagePreprocess, index: int | None = None
) -> tuple[np.ndarray, ImageTransform]:
    """uint8 H x W x 3 RGB to the model's row (layout and datatype of ``spec``) and the
    transform that maps its coordinates back."""
    image_module, _ = _pillow()
    height, width = pixels.shape[:2]
    scale_x = scale_y = 1.0
    if spec.resize is not None:
        new_width, new_height = _resized_size(width, height, spec.resize)
        if (new_width, new_height) != (width, height):
            image = image_module.fromarray(pixels).resize(
                (new_width, new_height), image_module.Resampling.BILINEAR
            )
            pixels = np.asarray(image, dtype=np.uint8)
        scale_x, scale_y = new_width / width, new_height / height
    crop_x = crop_y = 0
    if spec.crop is not None:
        crop_h, crop_w = spec.crop
        have_h, have_w = pixels.shape[:2]
        if crop_h > have_h or crop_w > have_w:
            raise InvalidInputError(
                f"{_name(index)} is {have_w}x{have_h} after the resize, smaller than the "
                f"{crop_w}x{crop_h} crop"
            )
        crop_y = round((have_h - crop_h) / 2.0)
        crop_x = round((have_w - crop_w) / 2.0)
        pixels = pixels[crop_y : crop_y + crop_h, crop_x : crop_x + crop_w]
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    row = _normalised(pixels, spec)
    if spec.layout == "CHW":
        row = np.ascontiguousarray(row.transpose(2, 0, 1))
    transform = ImageTransform(width, height, scale_x, scale_y, crop_x, crop_y)
    return row, transform


def _normalised(pixels: np.ndarray, spec: ImagePreprocess) -> np.ndarray:
    if spec.datatype == "UINT8":
        return np.ascontiguousarray(pixels)
    mean = np.asarray(spec.mean, dtype=np.float32)  # in the row's channel order (color)
    std = np.asarray(spec.std, dtype=np.float32)
    # (x * scale - mean) / std as one multiply-add per element.
    factor = np.float32(spec.scale) / std
    offset = -mean / std
    row: np.ndarray = pixels.astype(np.float32) * factor + offset
    return row.astype(np.float16) if spec.datatype == "FP16" else row


def image_tensor(
    data: bytes, spec: ImagePreprocess, index: int | None = None, charge: Charge | None = None
) -> tuple[np.ndarray, ImageTransform]:
    """Decode and preprocess one encoded image; the transform maps to its full size even
    when it was decoded smaller (``jpeg_draft``). ``charge`` holds the decoded pixels from
    before they are allocated until the row is made, then the row (given back: the pixels,
    freed when this returns; a negative charge)."""
    decoded = 0

    def counted(nbytes: int) -> None:
        nonlocal decoded
        assert charge is not None
        charge(nbytes)
        decoded += nbytes

    pixels, (width, height) = decode_image_sized(
        data, spec.max_pixels, index, spec.draft_side(), counted if charge else None
    )
    row, transform = preprocess_image(pixels, spec, index)
    if charge is not None:
        charge(row.nbytes - decoded)
    decoded_h, decoded_w = pixels.shape[:2]
    if (decoded_w, decoded_h) == (width, height):
        return row, transform
    return row, ImageTransform(
        width,
        height,
        transform.scale_x * decoded_w / width,
        transform.scale_y * decoded_h / height,
        transform.crop_x,
        transform.crop_y,
    )

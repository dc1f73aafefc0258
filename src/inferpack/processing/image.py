"""Encoded images to model rows: decode (bounded), resize, centre crop, normalise, layout.

Pillow decodes (lazily imported: the ``image`` extra). The declared size is read from the
header and checked against ``max_pixels`` before any pixel is decoded, so a small file
declaring 20000 x 20000 costs nothing. Resize and crop follow torchvision's PIL path for
evaluation (shorter side to ``resize`` with bilinear filtering, then a centre crop), so a
model trained with ``Resize(256) + CenterCrop(224)`` sees what it was evaluated on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferpack.errors import InvalidInputError, MissingExtraError, PayloadTooLargeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

FORMATS = "JPEG, PNG, WebP, BMP, GIF, TIFF"
_EXIF_ORIENTATION = 0x0112


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


def _name(index: int | None) -> str:
    return "image" if index is None else f"image {index}"


def decode_image(data: bytes, max_pixels: int, index: int | None = None) -> np.ndarray:
    """uint8 H x W x 3 RGB, EXIF orientation applied. 400 for empty, undecodable or
    truncated data; 413 for a declared size over ``max_pixels`` (checked from the header,
    before decoding)."""
    return decode_image_sized(data, max_pixels, index)[0]


def decode_image_sized(
    data: bytes, max_pixels: int, index: int | None = None, draft_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, and the (width, height) the image has at full resolution as
    displayed; with ``draft_side`` a JPEG may be decoded smaller, down to that side."""
    image_module, image_ops = _pillow()
    name = _name(index)
    if not data:
        raise InvalidInputError(f"{name} is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: our own limit applies
        try:
            image: PILImage.Image = image_module.open(io.BytesIO(data))
        except image_module.DecompressionBombError as error:
            # Pillow's own guard (twice its MAX_IMAGE_PIXELS) fires at open, before ours.
            raise PayloadTooLargeError(
                f"{name} declares too many pixels: {error} (limit "
                f"{max_pixels} pixels: preprocess.image.max_pixels)"
            ) from None
        except (OSError, ValueError, SyntaxError) as error:
            if "truncat" in str(error).lower():
                raise InvalidInputError(f"{name} is truncated: {error}") from None
            raise InvalidInputError(
                f"{name} is not a decodable image ({FORMATS}): {error}"
            ) from None
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLargeError(
                f"{name} declares {width}x{height} = {width * height} pixels, over the "
                f"limit of {max_pixels} (preprocess.image.max_pixels)"
            )
        try:
            if draft_side is not None and image.format == "JPEG":
                image.draft("RGB", (draft_side, draft_side))
            image.load()
            rotated = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            image = image_ops.exif_transpose(image) or image
            rgb = image.convert("RGB")
        except image_module.DecompressionBombError as error:
            raise PayloadTooLargeError(f"{name}: {error}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            text = str(error)
            what = "is truncated" if "truncat" in text.lower() else "cannot be decoded"
            raise InvalidInputError(f"{name} {what}: {text}") from None
    full_size = (height, width) if rotated else (width, height)
    return np.asarray(rgb, dtype=np.uint8), full_size


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
    data: bytes, spec: ImagePreprocess, index: int | None = None
) -> tuple[np.ndarray, ImageTransform]:
    """Decode and preprocess one encoded image; the transform maps to its full size even
    when it was decoded smaller (``jpeg_draft``)."""
    pixels, (width, height) = decode_image_sized(data, spec.max_pixels, index, spec.draft_side())
    row, transform = preprocess_image(pixels, spec, index)
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

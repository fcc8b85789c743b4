"""sam3core: in-process SAM 3 concept segmentation that encodes each image once."""

from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.protocol import SegmentEngine

__all__ = ["ImageHandle", "ImageInput", "SegmentEngine", "prepare_image"]

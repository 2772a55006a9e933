"""Data transforms in mmpretrain's TRANSFORMS registry: cross-modal views and their alignment."""

from .convert_color import ConvertColor
from .key_aligned_geometry import KeyAlignedGeometry
from .select_channels import SelectChannels
from .teacher_view import TeacherView

__all__ = ['ConvertColor', 'KeyAlignedGeometry', 'SelectChannels', 'TeacherView']

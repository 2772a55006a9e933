"""Data transforms registered in mmpretrain's TRANSFORMS registry (cross-modal views)."""

from .convert_color import ConvertColor
from .select_channels import SelectChannels
from .teacher_view import TeacherView

__all__ = ['ConvertColor', 'SelectChannels', 'TeacherView']

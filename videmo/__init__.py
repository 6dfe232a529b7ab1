"""videmo: per-face emotion timelines from videos.

Pipeline: decode -> detect -> classify -> track -> write. See README.md.
"""

from __future__ import annotations

from videmo.errors import (
    ClusterLost,
    DamagedVideoWarning,
    DataError,
    ModelError,
    OutputError,
    SettingsError,
    VidemoError,
    VideoError,
)

__version__ = "0.2.3"

__all__ = [
    "AnalysisResult", "ClusterLost", "DamagedVideoWarning", "DataError", "ModelError",
    "OutputError", "Settings", "SettingsError", "VideoError", "VidemoError",
    "__version__", "analyze", "read_batch", "read_faces", "read_timeline",
]  # fmt: skip

_API = ("AnalysisResult", "Settings", "analyze", "read_batch", "read_faces", "read_timeline")


def __getattr__(name: str):
    # Lazy so that `import videmo` stays cheap (no OpenCV/ONNX/Ray import).
    if name in _API:
        from videmo import api

        return getattr(api, name)
    raise AttributeError(f"module 'videmo' has no attribute {name!r}")

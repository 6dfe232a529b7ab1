"""videmo: per-face emotion timelines from videos.

Pipeline: decode -> detect -> classify -> track -> write. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "read_timeline"]


def __getattr__(name: str):
    # Lazy so that `import videmo` stays cheap (no OpenCV/ONNX/Ray import).
    if name in ("analyze", "read_timeline"):
        from videmo import api

        return getattr(api, name)
    raise AttributeError(name)

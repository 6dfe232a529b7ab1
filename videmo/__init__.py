"""videmo: per-face emotion timelines from videos.

Pipeline: decode -> detect -> classify -> track -> write. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "read_timeline"]


def __getattr__(name: str):
    # Lazy so that `import videmo` stays cheap (no OpenCV/ONNX/Ray import).
    if name == "analyze":
        from videmo.pipeline import analyze

        return analyze
    if name == "read_timeline":
        from videmo.outputs.timeline import read_timeline

        return read_timeline
    raise AttributeError(name)

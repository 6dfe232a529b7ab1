"""One colour per emotion, shared by the plots and the annotated video.

Membership and order come from ``EMOTIONS``; the table below only says which
colour a known class name gets, so a model with a different class list still
gets a full, stable palette (unknown names take colours from a fallback cycle).
"""

from __future__ import annotations

import itertools

from videmo.spec import EMOTIONS

#: Preferred colours for the FER2013 names (hex RGB, colour-blind-friendlier tab10 shades).
_PREFERRED: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#6b8e23",
    "fear": "#9467bd",
    "happy": "#f2c200",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#8c8c8c",
}
_FALLBACK = ("#17becf", "#e377c2", "#bcbd22", "#8c564b", "#2ca02c", "#7f7f7f")


def _build(classes: tuple[str, ...]) -> dict[str, str]:
    spare = itertools.cycle(_FALLBACK)
    return {name: _PREFERRED.get(name) or next(spare) for name in classes}


#: Emotion name -> hex RGB colour, in ``EMOTIONS`` order.
EMOTION_COLORS: dict[str, str] = _build(EMOTIONS)


def hex_to_bgr(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> OpenCV's (b, g, r) tuple of ints."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return b, g, r


def text_color_bgr(color: str) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a background of ``color``."""
    b, g, r = hex_to_bgr(color)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luma > 140 else (255, 255, 255)

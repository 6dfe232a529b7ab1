"""PNG charts of a timeline: per-face probability curves, an ethogram, a distribution.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot:
no global figure registry to leak, no GUI backend to pick, and safe to call
from worker threads. The Agg canvas is attached explicitly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from videmo.outputs.atomic import atomic_write, ensure_dir
from videmo.outputs.names import DISTRIBUTION_PNG, OVERVIEW_PNG, PLOTS_DIR, face_plot_name
from videmo.outputs.palette import EMOTION_COLORS
from videmo.outputs.timeline import EMOTION_DTYPE, PROB_COLUMNS, SMOOTH_COLUMNS
from videmo.spec import EMOTIONS

if TYPE_CHECKING:  # matplotlib takes half a second to import: only runs that plot load it
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch


#: Per-face charts are written for at most this many faces (those seen longest).
MAX_FACE_PLOTS = 24
#: The overview ethogram shows at most this many rows (faces seen longest).
MAX_OVERVIEW_FACES = 60
NO_FACES = "no faces detected"
_DPI = 100
#: PNG metadata: no matplotlib version, so reruns give the same bytes.
_PNG_METADATA = {"Software": None}


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return path


def _placeholder(fig: Figure, title: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, NO_FACES, ha="center", va="center", fontsize=14, transform=ax.transAxes)


def _frame_step(df: pd.DataFrame) -> float:
    """Typical seconds between frames (for bar widths and gap detection)."""
    times = np.unique(df["time_s"].to_numpy())
    if len(times) < 2:
        return 1.0 / 30
    return float(np.median(np.diff(times)))


def _faces_by_size(df: pd.DataFrame) -> list[int]:
    """Face ids, most frames first (ties: lower id first)."""
    counts = df["face_id"].value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [int(face_id) for face_id, _ in order]


def _break_gaps(times: np.ndarray, values: np.ndarray, step: float) -> tuple:
    """Insert NaN rows where a face was not seen, so lines do not bridge the gap."""
    if len(times) < 2:
        return times, values
    gaps = np.flatnonzero(np.diff(times) > 1.5 * step) + 1
    times = np.insert(times.astype(np.float64), gaps, np.nan)
    values = np.insert(values.astype(np.float64), gaps, np.nan, axis=0)
    return times, values


def _legend_handles() -> list[Patch]:
    from matplotlib.patches import Patch

    return [Patch(color=EMOTION_COLORS[name], label=name) for name in EMOTIONS]


def plot_face(face: pd.DataFrame, face_id: int, title: str, step: float) -> Figure:
    """Smoothed probabilities (solid) over raw ones (faint) for one face."""
    fig = _new_figure(10, 4)
    ax = fig.add_subplot()
    times = face["time_s"].to_numpy()
    t_s, smooth = _break_gaps(times, face[list(SMOOTH_COLUMNS)].to_numpy(), step)
    t_r, raw = _break_gaps(times, face[list(PROB_COLUMNS)].to_numpy(), step)
    for i, name in enumerate(EMOTIONS):
        color = EMOTION_COLORS[name]
        ax.plot(t_r, raw[:, i], color=color, alpha=0.25, linewidth=0.8)
        ax.plot(t_s, smooth[:, i], color=color, linewidth=1.6, label=name)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(f"{title} — face #{face_id} ({len(face)} frames)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return fig


def _runs(codes: np.ndarray, times: np.ndarray, step: float) -> list[tuple[int, float, float]]:
    """(code, start, width) for each stretch of one emotion without a gap in frames."""
    if len(codes) == 0:
        return []
    breaks = (codes[1:] != codes[:-1]) | (np.diff(times) > 1.5 * step)
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    ends = np.concatenate([starts[1:], [len(codes)]]) - 1
    return [
        (int(codes[s]), times[s], times[e] - times[s] + step)
        for s, e in zip(starts, ends, strict=True)
    ]


def plot_overview(df: pd.DataFrame, title: str) -> Figure:
    """Ethogram: one row per face, coloured by its smoothed emotion over time."""
    faces = _faces_by_size(df)
    shown = sorted(faces[:MAX_OVERVIEW_FACES])
    fig = _new_figure(12, min(2.0 + 0.35 * len(shown), 24.0))
    if not shown:
        _placeholder(fig, f"{title} — overview")
        return fig
    ax = fig.add_subplot()
    step = _frame_step(df)
    for row, face_id in enumerate(shown):
        face = df[df["face_id"] == face_id]
        codes = pd.Categorical(face["emotion"], dtype=EMOTION_DTYPE).codes
        runs = _runs(codes, face["time_s"].to_numpy(), step)
        for code in np.unique(codes):
            bars = [(start, width) for c, start, width in runs if c == code]
            ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=EMOTION_COLORS[EMOTIONS[code]])
    ax.set_yticks(range(len(shown)), [f"#{face_id}" for face_id in shown])
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("time (s)")
    note = (
        f" (the {len(shown)} of {len(faces)} faces seen longest)" if len(faces) > len(shown) else ""
    )
    ax.set_title(f"{title} — emotion per face over time{note}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=_legend_handles(), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def plot_distribution(df: pd.DataFrame, title: str) -> Figure:
    """Share of face-frames per emotion: overall, and per face for the longest-seen faces."""
    fig = _new_figure(12, 5)
    if len(df) == 0:
        _placeholder(fig, f"{title} — emotion distribution")
        return fig
    overall_ax, face_ax = fig.subplots(1, 2, width_ratios=[1, 1.4])
    colors = [EMOTION_COLORS[name] for name in EMOTIONS]
    shares = df["emotion"].value_counts(normalize=True).reindex(list(EMOTIONS), fill_value=0)
    overall_ax.bar(list(EMOTIONS), shares.to_numpy(), color=colors)
    overall_ax.set_ylim(0, 1)
    overall_ax.set_ylabel("fraction of face-frames")
    overall_ax.set_title(f"all faces ({len(df)} face-frames)")
    overall_ax.tick_params(axis="x", labelrotation=45)

    shown = sorted(_faces_by_size(df)[:MAX_FACE_PLOTS])
    table = pd.crosstab(df["face_id"], df["emotion"], normalize="index", dropna=False)
    table = table.reindex(index=shown, columns=list(EMOTIONS), fill_value=0)
    left = np.zeros(len(shown))
    labels = [f"#{face_id}" for face_id in shown]
    for name, color in zip(EMOTIONS, colors, strict=True):
        face_ax.barh(labels, table[name].to_numpy(), left=left, color=color, label=name)
        left += table[name].to_numpy()
    face_ax.invert_yaxis()
    face_ax.set_xlim(0, 1)
    face_ax.set_xlabel("fraction of the face's frames")
    face_ax.set_title("per face")
    face_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle(f"{title} — emotion distribution")
    return fig


@functools.cache
def _drawable_codepoints() -> frozenset[int]:
    """Characters the default font can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties())
    return frozenset(FT2Font(path).get_charmap())


def drawable(text: str) -> str:
    """``text`` with characters the font lacks (e.g. CJK file names) shown as ``?``.

    Matplotlib would draw empty boxes and warn once per glyph instead.
    """
    codepoints = _drawable_codepoints()
    return "".join(
        c if ord(c) in codepoints else " " if c.isspace() else "?" for c in text
    )  # a tab or newline in a file name is drawn as a space


#: Characters of a file name a chart's title keeps: a longer name ran off both edges of the
#: figure and took "face #1 (72 frames)" with it.
MAX_TITLE_NAME = 60


def shortened(name: str, limit: int = MAX_TITLE_NAME) -> str:
    """``name`` cut in the middle with an ellipsis when longer than ``limit`` (the start and
    the end, with the extension, are what tell files apart)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[len(name) - (limit - 1 - head) :]}"


def write_plots(df: pd.DataFrame, out_dir: Path, title: str) -> list[Path]:
    """Write ``overview.png``, ``distribution.png``, ``face_<id:03d>.png`` into ``out_dir/plots``.

    Per-face charts are capped at ``MAX_FACE_PLOTS`` faces (most frames first);
    the cap is logged. An empty timeline still gives valid PNGs that say so.
    """
    plots_dir = ensure_dir(Path(out_dir) / PLOTS_DIR)
    title = shortened(drawable(title))
    written = [
        _save(plot_overview(df, title), plots_dir / OVERVIEW_PNG),
        _save(plot_distribution(df, title), plots_dir / DISTRIBUTION_PNG),
    ]
    faces = _faces_by_size(df)  # the CLI says when some get no graph (it sees every video)
    plotted = set(faces[:MAX_FACE_PLOTS])
    step = _frame_step(df)
    for face_id, face in df.groupby("face_id", sort=True):
        if int(face_id) in plotted:
            fig = plot_face(face, int(face_id), title, step)
            written.append(_save(fig, plots_dir / face_plot_name(int(face_id))))
    return written

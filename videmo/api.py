"""The Python API: ``videmo.analyze``, ``videmo.read_timeline``, ``videmo.read_faces`` and
``videmo.read_batch``."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from videmo.detections import SmallFaces
from videmo.errors import DamagedVideoWarning, OutputError, SettingsError, VidemoError
from videmo.naming import removed_if_left_empty
from videmo.outputs.batch import read_batch
from videmo.outputs.timeline import faces_summary, read_faces, read_timeline
from videmo.runner import run_videos
from videmo.settings import Settings
from videmo.video import VideoInfo, probe

__all__ = ["AnalysisResult", "DamagedVideoWarning", "Settings", "analyze", "read_batch",
           "read_faces", "read_timeline"]  # fmt: skip


@dataclass
class AnalysisResult:
    """One analysed video: the timeline and per-face summary as DataFrames."""

    path: Path
    out_dir: Path | None
    info: VideoInfo
    timeline: pd.DataFrame
    faces: pd.DataFrame
    frames: int
    #: What was lost from a damaged file (``run.json``'s ``damage``); None when it read whole.
    damage: dict | None = None
    #: Faces found but left out as under ``min_face`` (``run.json``'s ``counts.small_faces``):
    #: a video whose faces are all that small has an empty timeline, not no one in it.
    small_faces: SmallFaces = field(default_factory=SmallFaces)

    @property
    def damaged(self) -> bool:
        return self.damage is not None


def analyze(
    path: str | Path,
    out_dir: str | Path | None = None,
    settings: Settings | None = None,
    **options,
) -> AnalysisResult:
    """Analyse one video; with ``out_dir`` also write all outputs there.

    ``options`` are ``Settings`` fields (``every=2``, ``detector="haar"``...).
    Raises a ``VidemoError`` (``VideoError`` for an unreadable input, ``OutputError``,
    ``ModelError``...) with a one-line message if the video cannot be analysed. A damaged
    file is analysed as far as it decodes, with a ``DamagedVideoWarning`` and
    ``AnalysisResult.damage`` saying what was lost.
    """
    if settings is not None and not isinstance(settings, Settings):
        raise SettingsError(
            f"analyze(): settings must be a videmo.Settings, not {type(settings).__name__} "
            "(or pass options as keywords: every=2)"
        )
    if not str(path):
        raise VidemoError("analyze(): the video path is empty")
    settings = (settings or Settings()).with_options(options, "analyze()")
    path = Path(path)
    if out_dir is None:
        settings = replace(settings, video=False, plots=False, report=False)
        with tempfile.TemporaryDirectory(prefix="videmo-") as tmp:
            [run] = run_videos([path], Path(tmp), settings, finish=lambda *_: None)
    else:
        if not str(out_dir).strip():  # Path("") is the current folder: not what was meant
            raise OutputError("analyze(): out_dir is empty: name a folder ('.' for this one)")
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputError(f"analyze(): out_dir {out_dir} exists and is not a folder")
        with removed_if_left_empty(out_dir):  # as the command's -o, if nothing was written
            [run] = run_videos([path], out_dir.parent, settings, out_dirs=[out_dir])
    if run.status == "failed":
        raise run.error_type(run.error)
    if run.damage:  # the timeline covers what decoded: say so, as the CLI does
        warnings.warn(f"{path}: {run.error}", DamagedVideoWarning, stacklevel=2)
    timeline = run.timeline if run.timeline is not None else read_timeline(out_dir)
    return AnalysisResult(
        path, out_dir, run.info or probe(path), timeline, faces_summary(timeline), run.frames,
        run.damage, run.small_faces,
    )  # fmt: skip

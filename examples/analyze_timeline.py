"""A short pandas analysis of a videmo timeline.

    videmo run ../shared/data/videos/single_face/pyfeat_WolfgangLanger_Pexels.mp4
    python examples/analyze_timeline.py videmo_out/pyfeat_WolfgangLanger_Pexels

Prints, per face: how long it was on screen, its emotion shares, the
emotion per second, and the moments its dominant emotion changed.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

import videmo


def emotion_shares(timeline: pd.DataFrame) -> pd.DataFrame:
    """Share of each face's frames per (smoothed) emotion label, in percent."""
    counts = timeline.groupby(["face_id", "emotion"], observed=False).size()
    return (counts / counts.groupby(level="face_id").transform("sum") * 100).unstack().round(1)


def per_second(timeline: pd.DataFrame, face_id: int) -> pd.DataFrame:
    """Mean smoothed probabilities of one face in 1-second bins, and the winning label."""
    face = timeline[timeline["face_id"] == face_id]
    smooth_cols = [c for c in face.columns if c.startswith("smooth_")]
    bins = face.groupby(face["time_s"].floordiv(1.0).astype(int))[smooth_cols].mean()
    bins.columns = [c.removeprefix("smooth_") for c in smooth_cols]
    bins.index.name = "second"
    bins["emotion"] = bins.idxmax(axis=1)
    return bins.round(3)


def changes(timeline: pd.DataFrame) -> pd.DataFrame:
    """Rows where a face's smoothed emotion label differs from its previous row."""
    ordered = timeline.sort_values(["face_id", "frame"])
    previous = ordered.groupby("face_id")["emotion"].shift()
    changed = ordered[previous.notna() & (ordered["emotion"] != previous)]
    return changed.assign(previous=previous[changed.index])[
        ["face_id", "time_s", "previous", "emotion", "confidence"]
    ]


def main(path: str) -> None:
    timeline = videmo.read_timeline(path)
    print(f"{len(timeline)} rows, {timeline['face_id'].nunique()} faces\n")
    on_screen = timeline.groupby("face_id")["time_s"].agg(["min", "max", "count"])
    print("on screen (s):\n", on_screen, "\n")
    print("emotion shares (% of frames):\n", emotion_shares(timeline), "\n")
    if len(timeline):
        main_face = int(timeline["face_id"].value_counts().idxmax())
        print(f"face {main_face}, per second:\n", per_second(timeline, main_face), "\n")
    print("emotion changes:\n", changes(timeline).to_string(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", default="videmo_out/pyfeat_WolfgangLanger_Pexels",
        help="a video's output folder, or its timeline.csv / .parquet (default: %(default)s)",
    )  # fmt: skip
    try:
        main(parser.parse_args().folder)
    except videmo.VidemoError as exc:  # e.g. no timeline there: one line, not a traceback
        sys.exit(f"analyze_timeline.py: error: {exc}")

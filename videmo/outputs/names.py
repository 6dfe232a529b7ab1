"""The names of everything videmo writes: one place for each, read by the writers and by
resume (which must know every output to tell a finished folder, and to clear an old one)."""

from __future__ import annotations

import re

#: A video's folder.
RUN_JSON = "run.json"
TIMELINE_PARQUET = "timeline.parquet"
TIMELINE_CSV = "timeline.csv"
FACES_CSV = "faces.csv"
ANNOTATED_MP4 = "annotated.mp4"
REPORT_HTML = "report.html"  # a video's page, and the batch's at the output root
PLOTS_DIR = "plots"
OVERVIEW_PNG = "overview.png"
DISTRIBUTION_PNG = "distribution.png"
FACES_DIR = "faces"  # the report's thumbnails

#: The output root of a batch, beside the video folders.
BATCH_CSV = "batch.csv"


def face_plot_name(face_id: int) -> str:
    """``face_NNN.png``, one face's chart in ``plots/`` (the report links to it)."""
    return f"face_{face_id:03d}.png"


def thumbnail_name(face_id: int) -> str:
    """``face_NNN.jpg``, one face's thumbnail in ``faces/`` (the report shows it)."""
    return f"face_{face_id:03d}.jpg"


#: How the two name a face's file, for resume to recognise them (ids of 3 digits or more).
FACE_PLOT_PATTERN = r"face_\d{3,}\.png"
THUMBNAIL_PATTERN = r"face_\d{3,}\.jpg"

#: Every file and folder videmo writes in a video's folder besides run.json (resume clears
#: only these from a folder it redoes, and knows a finished folder by them).
OUTPUT_FILES = (
    TIMELINE_PARQUET, TIMELINE_CSV, FACES_CSV, ANNOTATED_MP4, PLOTS_DIR, FACES_DIR, REPORT_HTML,
)  # fmt: skip
#: What videmo writes inside its output subfolders (plots, thumbnails).
OUTPUT_FOLDERS = {
    PLOTS_DIR: re.compile(
        "|".join((re.escape(OVERVIEW_PNG), re.escape(DISTRIBUTION_PNG), FACE_PLOT_PATTERN))
    ),
    FACES_DIR: re.compile(THUMBNAIL_PATTERN),
}

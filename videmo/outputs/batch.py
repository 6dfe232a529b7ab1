"""The batch summary at an output root: ``batch.csv`` and the batch's ``report.html``.

The sink of a batch, apart from the executor that runs it: the runner hands it the
finished :class:`~videmo.runner.VideoRun` records, and removes an earlier batch's summary
before it could describe a run it is not about.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from videmo.errors import OutputError, SettingsError, VidemoError
from videmo.naming import printable
from videmo.outputs.atomic import ensure_dir, write_text_atomic
from videmo.outputs.names import BATCH_CSV, REPORT_HTML

if TYPE_CHECKING:
    from videmo.runner import VideoRun


#: ``batch.csv``'s columns: its header line is how a rerun knows the file is videmo's.
BATCH_COLUMNS = ("video", "output", "status", "frames", "faces", "seconds", "error")

#: The batch page's title: how a rerun knows a ``report.html`` at the root is videmo's.
BATCH_REPORT_TITLE = "videmo batch"


def write_batch_csv(runs: list[VideoRun], out_root: Path) -> Path:
    """``batch.csv`` at the output root: one row per input with status and error.

    ``OutputError`` if it cannot be written (the caller says so, or tries again later).
    """
    columns = (
        [printable(r.path) for r in runs],
        [printable(r.out_dir) if r.out_dir is not None else "" for r in runs],
        [r.status for r in runs],
        [r.frames for r in runs],
        [r.faces for r in runs],
        [round(r.seconds, 3) for r in runs],
        [printable(r.error) for r in runs],
    )
    rows = pd.DataFrame(dict(zip(BATCH_COLUMNS, columns, strict=True)))
    ensure_dir(out_root)
    return write_text_atomic(out_root / BATCH_CSV, rows.to_csv(index=False))


def write_final_batch_csv(runs: list[VideoRun], out_root: Path) -> Path:
    """``batch.csv`` at the end of a batch (or of an interrupted one).

    Where it cannot be written (``OutputError``), the snapshot written while the batch ran,
    with videos ``unfinished`` that have since finished, is removed first: it must not be
    taken for the end.
    """
    try:
        return write_batch_csv(runs, out_root)
    except VidemoError:
        stale = out_root / BATCH_CSV
        if _written_by_videmo(stale):
            with contextlib.suppress(OSError):
                stale.unlink()
        raise


def remove_batch_summary(out_root: Path) -> None:
    """Delete an earlier batch's ``batch.csv`` and ``report.html`` before a new batch runs.

    They describe the earlier run; left in place while this one runs, a batch that is
    interrupted or killed would leave a summary that no longer matches the folders.
    """
    for name in (BATCH_CSV, REPORT_HTML):  # both checked before either is removed
        if not _written_by_videmo(out_root / name):
            raise OutputError(
                f"{out_root / name} was not written by videmo, and a batch writes its summary "
                "there: move it, or give another -o"
            )
    for name in (BATCH_CSV, REPORT_HTML):
        try:
            (out_root / name).unlink(missing_ok=True)
        except OSError as exc:  # e.g. a read-only file system, even where there is no file
            what = (
                f"replace {out_root / name}"
                if (out_root / name).exists()
                else f"write in {out_root}"
            )
            raise OutputError(f"cannot {what}: {exc.strerror}") from None


def _written_by_videmo(path: Path) -> bool:
    """Whether a summary file at the output root is videmo's (or absent): a user's own
    ``batch.csv`` or ``report.html`` there is never removed or replaced."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except FileNotFoundError:
        return True
    except OSError:  # a folder, or unreadable: removing it fails with its own message
        return True
    if path.name == BATCH_CSV:
        return head.split(b"\n", 1)[0].rstrip(b"\r") == ",".join(BATCH_COLUMNS).encode()
    return f"<title>{BATCH_REPORT_TITLE}</title>".encode() in head


def summary_lists(out_root: Path, folder: str) -> bool:
    """Whether an earlier batch's ``batch.csv`` in ``out_root`` describes the folder ``folder``."""
    try:
        outputs = pd.read_csv(out_root / BATCH_CSV, usecols=["output"], dtype=str)["output"]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return False
    return any(Path(o).name == folder for o in outputs.dropna())


#: ``batch.csv`` statuses whose folder holds finished outputs (``read_batch`` reads them).
FINISHED_STATUSES = ("done", "damaged", "skipped")


def read_batch(root: Path, table: str = "timeline") -> pd.DataFrame:
    """Every finished video of a batch as one table, with a ``video`` column first.

    Reads ``batch.csv`` at ``root`` and each finished video's timeline (``table="faces"``:
    its ``faces.csv``) from the folder of that name in ``root``, so a moved or copied
    results folder reads the same wherever it is read from (``batch.csv``'s ``output``
    paths are as the command was given them). ``video`` is the input path as in
    ``batch.csv``, a category in the batch's order; videos that failed or were interrupted
    have no outputs and are not in the table (``batch.csv`` says why).
    """
    from videmo.outputs.timeline import FACES_COLUMNS, TIMELINE_COLUMNS, read_faces, read_timeline

    readers = {"timeline": (read_timeline, TIMELINE_COLUMNS), "faces": (read_faces, FACES_COLUMNS)}
    if table not in readers:
        raise SettingsError(f"read_batch(): table must be 'timeline' or 'faces', not {table!r}")
    read, schema = readers[table]
    root = Path(root)
    try:
        listing = pd.read_csv(root / BATCH_CSV, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise OutputError(f"no batch at {root}: cannot read {BATCH_CSV} ({exc})") from None
    if tuple(listing.columns) != BATCH_COLUMNS:
        raise OutputError(f"not a videmo {BATCH_CSV}: {root / BATCH_CSV}")
    finished = listing[listing["status"].isin(FINISHED_STATUSES) & (listing["output"] != "")]
    videos = pd.CategoricalDtype(listing["video"].drop_duplicates().tolist())
    parts = [
        read(root / Path(row.output).name).assign(video=row.video) for row in finished.itertuples()
    ]
    empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.items()})
    combined = pd.concat([empty.assign(video=pd.Series(dtype=str)), *parts], ignore_index=True)
    combined["video"] = combined["video"].astype(videos)
    for name, dtype in schema.items():  # concat keeps them; an all-empty batch needs telling
        combined[name] = combined[name].astype(dtype)
    return combined[["video", *schema]]


def write_batch_report(runs: list[VideoRun], out_root: Path) -> Path:
    """``report.html`` at the output root: every input, linking to its own page.

    A failure (a full disk) raises the writer's one-line OutputError: the caller warns,
    since every video's own outputs and ``batch.csv`` are already written.
    """
    from videmo.outputs.report import write_batch_report as write_page

    entries = [
        {"video": r.path, "output": r.out_dir, "status": r.status, "frames": r.frames,
         "faces": r.faces, "error": printable(r.error)}
        for r in runs
    ]  # fmt: skip
    return write_page(entries, out_root)

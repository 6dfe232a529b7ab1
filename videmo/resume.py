"""Resuming a batch: what identifies a finished output folder, and clearing an unfinished one.

``run.json`` is written last in every video folder; it records a fingerprint of the
input, the analysis settings, the model and videmo's version. A rerun skips a folder
whose fingerprint matches, refuses one that holds another input's outputs (unless
``--overwrite``), and redoes anything else after removing what videmo wrote there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

import videmo
from videmo.detections import SmallFaces
from videmo.outputs.atomic import temp_of
from videmo.outputs.names import OUTPUT_FILES, OUTPUT_FOLDERS, RUN_JSON
from videmo.settings import ANALYSIS_KEYS, Settings


def input_fingerprint(path: Path) -> dict:
    """Cheap identity of an input file: size plus a hash of its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return {"size": size, "sha256_head_tail": digest.hexdigest()}


def run_fingerprint(path: Path, settings: Settings, model_sha: str) -> dict:
    """What must match for existing outputs to count as this run's."""
    return {
        "input": input_fingerprint(path),
        "settings": settings.analysis_fingerprint(),
        "model_sha256": model_sha,
        "videmo": videmo.__version__,
    }


#: run.json statuses of a finished folder: all outputs written ("damaged": of a damaged file).
FINAL_STATUSES = ("complete", "damaged")
#: Settings that choose which output files are written (not what they contain).
OUTPUT_KEYS = ("video", "plots", "report")
#: Files videmo writes at the top of a video's folder (their temp names are cleaned up).
_TOP_LEVEL_NAME = re.compile("|".join(re.escape(n) for n in (*OUTPUT_FILES, RUN_JSON)))


#: The types of the run.json fields resume reads (a hand-edited file may hold others).
_FIELD_TYPES = {"fingerprint": dict, "settings": dict, "outputs": list, "output_bytes": dict,
                "counts": dict, "status": str}  # fmt: skip


def _read_run(out_dir: Path) -> dict | None:
    """The folder's ``run.json`` as a dict (None: missing, unreadable, not an object, or
    with a field of another type, which is as good as unreadable: the video is redone)."""
    try:
        data = json.loads((out_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if any(key in data and not isinstance(data[key], kind) for key, kind in _FIELD_TYPES.items()):
        return None
    if not all(isinstance(name, str) for name in data.get("outputs", [])):
        return None
    return data


def is_finished(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished run (``run.json``, written last, says so)."""
    data = _read_run(out_dir)
    return data is not None and data.get("status") in FINAL_STATUSES


def what_differs(out_dir: Path, fingerprint: dict, settings: Settings) -> str:
    """Why a finished folder is another run's, in words: the input, settings, model or version."""
    data = _read_run(out_dir)
    if data is None:
        return "another run"
    old = data.get("fingerprint") or {}
    if old.get("input") != fingerprint["input"]:
        return "another input (a different file, or this one before it changed)"
    if old.get("settings") != fingerprint["settings"]:
        done = data.get("settings") or {}
        changed = [
            f"{key} {done[key]} -> {getattr(settings, key)}"
            for key in ANALYSIS_KEYS
            if key in done and done[key] != getattr(settings, key)
        ]
        return f"other settings ({', '.join(changed)})" if changed else "other settings"
    if old.get("model_sha256") != fingerprint["model_sha256"]:
        return "another model"
    if old.get("videmo") != fingerprint["videmo"]:
        return f"videmo {old['videmo']}" if old.get("videmo") else "another videmo release"
    return "another run"


def existing_state(out_dir: Path, fingerprint: dict, settings: Settings | None = None) -> str:
    """'complete' (same fingerprint), 'different' (complete, other input), or 'absent'.

    A folder whose listed outputs are missing or changed in size is 'absent': the rerun
    makes them again. A complete folder that lacks an output now asked for (the annotated video
    or the plots of an earlier ``--no-video``/``--no-plots`` run) is 'absent':
    the rerun adds it (:func:`redo_reason` says which).
    """
    data = _finished_run(out_dir)
    if data is None:
        return "absent"
    if data.get("fingerprint") != fingerprint:
        return "different"
    return "absent" if _redo_reason(out_dir, data, settings) else "complete"


def redo_reason(out_dir: Path, fingerprint: dict, settings: Settings) -> str:
    """Why a finished folder of this very run is made again ("" if it is not finished, is
    another run's, or is complete): the rerun says so instead of redoing it silently."""
    data = _finished_run(out_dir)
    if data is None or data.get("fingerprint") != fingerprint:
        return ""
    return _redo_reason(out_dir, data, settings)


def _finished_run(out_dir: Path) -> dict | None:
    """The ``run.json`` of a finished folder (None if there is none, or it is unfinished)."""
    data = _read_run(out_dir)
    return data if data is not None and data.get("status") in FINAL_STATUSES else None


def _redo_reason(out_dir: Path, data: dict, settings: Settings | None) -> str:
    """What a finished folder of the same run lacks: an output lost or changed in size (a
    rerun makes them again, no --overwrite needed), or one asked for now and not before."""
    sizes = data.get("output_bytes") or {}
    for name in data.get("outputs") or []:
        try:
            size = (out_dir / name).stat().st_size
        except OSError:
            return f"its {name} was missing"
        if name in sizes and sizes[name] != size:
            return f"its {name} had changed size"
    done = data.get("settings", {})
    for key in OUTPUT_KEYS:
        if settings is not None and getattr(settings, key) and not done.get(key):
            return f"it was made with --no-{key} before"
    return ""


def previous_counts(out_dir: Path) -> tuple[int, int]:
    """Frames and faces of a finished earlier run (for batch.csv rows of skipped videos)."""
    counts = (_read_run(out_dir) or {}).get("counts", {})
    try:
        return int(counts.get("frames_analysed", 0)), int(counts.get("faces", 0))
    except (ValueError, TypeError, AttributeError):
        return 0, 0


def previous_small_faces(out_dir: Path) -> SmallFaces:
    """Faces a finished earlier run left out as under --min-face (none if it did not say)."""
    counts = (_read_run(out_dir) or {}).get("counts", {})
    try:
        return SmallFaces(**counts["small_faces"])
    except (KeyError, TypeError, AttributeError):  # written before 0.2.2, or edited by hand
        return SmallFaces()


def previous_damage(out_dir: Path) -> dict | None:
    """The ``damage`` object of a finished earlier run (None for an intact video)."""
    data = _read_run(out_dir) or {}
    damage = data.get("damage") if data.get("status") == "damaged" else None
    return damage if isinstance(damage, dict) else None


def remove_old_outputs(out_dir: Path) -> None:
    """Delete the outputs of an earlier run, so none outlives the run that replaces it.

    Only names videmo writes are touched (an old ``annotated.mp4`` after a
    ``--no-video`` rerun, ``plots/face_NNN.png`` of faces that no longer exist);
    ``plots/`` and ``faces/`` are removed only if nothing of the user's is left in them.
    """
    for name in OUTPUT_FILES:
        target = out_dir / name
        if name in OUTPUT_FOLDERS and target.is_dir() and not target.is_symlink():
            _remove_matching(target, OUTPUT_FOLDERS[name])
            with contextlib.suppress(OSError):  # not empty: the user's files stay
                target.rmdir()
        elif target.is_file() or target.is_symlink():
            target.unlink()


def remove_temp_files(out_dir: Path) -> None:
    """Delete temp files a killed run may have left: those of names videmo writes."""
    _remove_matching(out_dir, _TOP_LEVEL_NAME, temps_only=True)


def _remove_matching(folder: Path, pattern: re.Pattern, temps_only: bool = False) -> None:
    """Delete the files in ``folder`` named by ``pattern`` (or temp files of such names)."""
    for entry in folder.iterdir():
        if not entry.is_file() or entry.is_symlink():
            continue
        temp_for = temp_of(entry.name)
        ours = (
            pattern.fullmatch(temp_for)
            if temp_for
            else not temps_only and pattern.fullmatch(entry.name)
        )
        if ours:
            entry.unlink(missing_ok=True)

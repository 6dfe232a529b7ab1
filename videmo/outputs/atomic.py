"""Atomic file writes: an output file is either the old one or the complete new one.

A crash, a full disk or Ctrl-C in the middle of writing must never leave a
truncated ``timeline.parquet`` that a later run (or a user) mistakes for a
result. So every writer writes a hidden temporary file in the destination
folder (same filesystem, so the final ``os.replace`` is atomic) and renames it
only when the write has finished. OS-level failures are turned into
:class:`~videmo.errors.OutputError` with a one-line message naming the path,
which the CLI prints as is.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from videmo.errors import OutputError

#: Makes temp names unique between threads of one process (the pid covers processes).
_counter = itertools.count()


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for an OS or writer error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def temp_path_for(path: Path, suffix_keep: bool = True) -> Path:
    """Hidden temp name next to ``path``.

    With ``suffix_keep`` the real extension stays last
    (``.timeline.<pid>.<n>.tmp.parquet``) for writers that choose their format
    from it; otherwise the name is ``.timeline.parquet.<pid>.<n>.tmp``.
    """
    tag = f"{os.getpid()}.{next(_counter)}.tmp"
    if suffix_keep and path.suffix:
        return path.with_name(f".{path.stem}.{tag}{path.suffix}")
    return path.with_name(f".{path.name}.{tag}")


#: The temp names of videmo's writers: ``.<name>.<pid>.<n>.tmp``, ``.<stem>.<pid>.<n>.tmp.<ext>``
#: (``temp_path_for``) and ``.<stem>.<k>.tmp.<ext>`` (annotated-video segments).
#: ``pid`` is set only in ``temp_path_for`` names (two numbers: ``<pid>.<n>``).
_TEMP_NAME = re.compile(r"^\.(?P<base>.+?)\.(?:(?P<pid>\d+)\.)?\d+\.tmp(?P<ext>\.[A-Za-z0-9]+)?$")


def temp_of(name: str) -> str | None:
    """The file a videmo temp name stands for (``.run.json.12.3.tmp`` -> ``run.json``), or None.

    Cleaning up after a killed run removes only temp files of names videmo writes, never
    a user's own ``notes.tmp.txt`` in the same folder.
    """
    match = _TEMP_NAME.match(name)
    if match is None:
        return None
    base = match["base"] + (match["ext"] or "")
    # a temp of a temp (an annotated-video segment ``.annotated.0.tmp.mp4`` being written
    # as ``..annotated.0.tmp.<pid>.<n>.tmp.mp4``) stands for what the inner one stands for
    return temp_of(base) or base


def orphaned_temps(folder: Path, names: Callable[[str], bool]) -> list[Path]:
    """videmo temp files in ``folder`` of the files ``names`` accepts, whose writing process
    is gone (killed mid-write).

    Only ``temp_path_for`` names carry a pid; a temp of a live process, or of a pid that
    cannot be checked, is kept, so a writer still at work never loses its file. (A writer
    in another pid namespace, sharing the folder, would look gone: callers hold a lock that
    such a writer also takes.)
    """
    orphans = []
    for entry in sorted(folder.iterdir()):
        target, match = temp_of(entry.name), _TEMP_NAME.match(entry.name)
        pid = match["pid"] if match else None
        if target is None or pid is None or not names(target):
            continue
        if not entry.is_file() or entry.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            orphans.append(entry)
        except (OSError, OverflowError, ValueError):
            continue
    return orphans


def ensure_dir(path: Path) -> Path:
    """Create an output folder (and parents); ``OutputError`` if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {_reason(exc)}") from exc
    return path


def check_writable_target(path: Path) -> None:
    """Fail early, before any work, when the destination folder cannot hold the file."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: {parent} {what}")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")


def check_output_file(path: Path) -> None:
    """Before minutes of work: the file could be written there now (a folder that exists but
    refuses files, such as a read-only one, is found here too, not only after the work)."""
    path = Path(path)
    if _special(path):
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        return
    target = _real_target(path)
    check_writable_target(target)
    _refuse_read_only(target, path)
    try:
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".videmo-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None


def _special(path: Path) -> bool:
    """An existing target that is neither a regular file nor a folder (a pipe, a terminal,
    ``/dev/stdout``, ``/dev/full``): it is written into, as a shell's ``>`` would, never
    renamed over (as root that replaced the device node itself)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _real_target(path: Path) -> Path:
    """The file a symlink names, so the new file replaces it and the link stays a link."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _refuse_read_only(target: Path, path: Path) -> None:
    """A file without write permission is not replaced (a shell's ``>`` would fail too)."""
    if target.is_file() and not os.access(target, os.W_OK):
        raise OutputError(f"cannot write {path}: it is read-only")


def _discard(tmp: Path) -> None:
    """Remove a temp file if it exists; never mask the error that got us here."""
    with suppress(OSError):
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: Path, suffix_keep: bool = True) -> Iterator[Path]:
    """Yield a temp path to write; move it onto ``path`` only if the body succeeds.

    On any exception in the body (KeyboardInterrupt included) the temp file is
    removed and the previous ``path``, if any, is left untouched. ``OSError``
    from the body or the rename (permission denied, disk full, read-only
    filesystem) is re-raised as ``OutputError``; other exceptions pass through.
    """
    path = Path(path)
    if _special(path):
        with _written_into(path) as tmp:
            yield tmp
        return
    target = _real_target(path)
    check_writable_target(target)
    _refuse_read_only(target, path)
    tmp = temp_path_for(target, suffix_keep)
    try:
        yield tmp
        publish(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    except BaseException:
        _discard(tmp)
        raise


@contextmanager
def _written_into(path: Path) -> Iterator[Path]:
    """Yield a private temp path; once the body finishes, copy what it wrote into ``path``
    (a pipe or device: there is nothing to rename, and no half-written file to leave)."""
    folder = Path(tempfile.mkdtemp(prefix="videmo-"))
    try:
        tmp = folder / f"out{path.suffix}"
        yield tmp
        with open(tmp, "rb") as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Make a finished temp file ``path``: fsync the data, rename, fsync the folder.

    Without the first fsync a power loss after the rename can leave ``run.json``
    next to empty files; without the last one the rename itself can be lost.
    This is the one rename-into-place of videmo's writers (files and videos).
    """
    fsync_file(tmp)
    os.replace(tmp, path)
    with suppress(OSError):  # not every filesystem can fsync a folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_or_discard(tmp: Path, path: Path) -> None:
    """:func:`publish`, for writers that made their temp file themselves (videos): if the
    rename fails, the temp file goes and the error is one ``OutputError`` line."""
    try:
        publish(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(Path(path)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically, with ``\\n`` line endings on every OS."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2, trailing newline) so reruns diff cleanly."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text)

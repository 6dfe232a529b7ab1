"""Output folder names: safe, unique, and stable for an input whatever else is in the batch.

Rule (also in the README): a video's folder is ``OUT/<name>``, where ``<name>``
is its file name without the extension, made safe (no path separators or
control characters, no leading dot, invalid UTF-8 replaced, ``video`` when
nothing is left). The first input to claim ``<name>`` keeps it; another input
with the same name gets ``<name>-<8 hex digits of its absolute path's sha256>``.
A folder is claimed by writing its input's absolute path into
``.videmo-input`` with an exclusive create, so two inputs, or two processes
writing into the same root, can never share a folder, and rerunning a batch
with more or fewer inputs never renames anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: folders are claimed, not locked
    fcntl = None  # type: ignore[assignment]

from videmo.errors import OutputError
from videmo.outputs.atomic import ensure_dir, write_bytes_atomic
from videmo.outputs.names import BATCH_CSV, REPORT_HTML, RUN_JSON

CLAIM_FILE = ".videmo-input"
#: What a batch writes at the output root beside the video folders: never a video's folder.
ROOT_FILES = frozenset({BATCH_CSV, REPORT_HTML})

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def printable(path: Path | str) -> str:
    """A path as valid UTF-8 text (undecodable bytes become U+FFFD), for tables and JSON."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def input_key(path: Path) -> str:
    """The identity of an input: its absolute path as the user named it (links not followed)."""
    return os.path.abspath(os.fsdecode(path))


def safe_name(path: Path) -> str:
    """A folder name from the file name: printable, valid UTF-8, never ``.``/``..``/hidden."""
    stem = path.stem if path.suffix else path.name
    text = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _UNSAFE.sub("_", text.replace("\ufffd", "_")).strip()
    text = text.lstrip(".")
    return text or "video"


#: Longest folder name most filesystems take, in bytes (``NAME_MAX``).
NAME_MAX_BYTES = 255


def _hashed(name: str, key: str) -> str:
    """``<name>-<8 hex>``, the name cut (at a character) so that the whole fits NAME_MAX."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = NAME_MAX_BYTES - len(digest) - 1
    return f"{name.encode()[:room].decode('utf-8', 'ignore')}-{digest}"


def _owner(folder: Path) -> str | None:
    try:
        return os.fsdecode((folder / CLAIM_FILE).read_bytes().rstrip(b"\n"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot read {CLAIM_FILE}: {exc.strerror}") from None


def _try_claim(folder: Path, key: str) -> bool:
    """Claim ``folder`` for ``key``; True if it is (now or already) ``key``'s.

    A folder that holds anything but no claim (a run's outputs from before claims were
    recorded, or the user's own files under the same name) belongs to someone else: it
    is never claimed over its contents, and the input gets its ``-<hash>`` name.
    """
    if folder.name in ROOT_FILES or (folder.exists() and not folder.is_dir()):
        return False  # the batch summary's name, or a file of the user's
    owner = _owner(folder)
    if owner is not None:
        return _same_input(owner, key)
    if (folder / RUN_JSON).is_file() or (folder.is_dir() and any(folder.iterdir())):
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another process claimed it a moment ago
        return _same_input(_owner(folder), key)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.fsencode(key) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _same_input(owner: str | None, key: str) -> bool:
    """Whether a folder's claim names this input: the same path, or another path to the
    same file (a symlinked folder, the link and its target), so a rerun through it resumes."""
    if owner is None:
        return False
    if owner == key:
        return True
    try:
        return os.path.samefile(owner, key)
    except OSError:  # one of them is gone
        return False


def claim_output_dir(out_root: Path, path: Path) -> Path:
    """The output folder of ``path`` under ``out_root``, claimed for it (see module doc)."""
    key = input_key(path)
    name = safe_name(path)
    for candidate in (name, _hashed(name, key)):
        folder = out_root / candidate
        if _try_claim(folder, key):
            return folder
    raise OutputError(f"{out_root}: both {name} and {_hashed(name, key)} belong to other inputs")


def own_output_dir(folder: Path, path: Path) -> None:
    """Record ``path`` as the owner of ``folder``, which is about to hold its outputs.

    Folders named by ``claim_output_dir`` already are its; a folder the caller named
    (``out_dir=``) is claimed here, so a later batch into the same root does not take it.
    """
    key = input_key(path)
    if _owner(folder) != key:
        write_bytes_atomic(ensure_dir(folder) / CLAIM_FILE, os.fsencode(key) + b"\n")


def plural(count: int, noun: str) -> str:
    """``1 frame``, ``2 frames``: a count and its noun, for what videmo says."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


@contextlib.contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Remove ``folder`` and the parents made for it (``-o new/deeper``) again, if the body
    leaves them empty: an output root made for one input that failed before writing
    anything must not stay behind as an empty folder."""
    missing = [d for d in (folder, *folder.parents) if not os.path.lexists(d)]
    try:
        yield
    finally:
        for made in missing:  # the folder first, then upwards
            try:
                made.rmdir()
            except OSError:  # not empty, or gone: leave it and what is above it
                break


def release_output_dir(folder: Path, path: Path) -> None:
    """Give up ``path``'s claim on ``folder`` when it failed before writing anything there.

    A file that is not a video, say, must not keep the name from the video that comes next;
    a folder holding anything besides the claim (partial outputs) stays claimed.
    """
    try:
        if [p.name for p in folder.iterdir()] != [CLAIM_FILE] or _owner(folder) != input_key(path):
            return
        (folder / CLAIM_FILE).unlink()
        folder.rmdir()
    except OSError:  # gone, not a folder, or not ours to remove: leave it as it is
        return


def lock_output_dir(folder: Path) -> int | None:
    """Hold ``folder`` until its video is finished: the folder itself, open and locked.
    Another videmo process writing there (two copies of a job started together, or two
    ``analyze(out_dir=...)`` calls naming one folder) must not clear or mix the outputs
    this one is writing; it gets ``OutputError``.

    The lock is the operating system's (``flock``, on the folder): a killed run holds
    nothing, and a named folder and a claimed one are held the same way.
    Returns the file descriptor to pass to :func:`unlock_output_dir` (None where locks
    are not available).
    """
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutputError(
            f"{folder} is being written by another videmo run: run again when it has finished"
        ) from None
    return fd


def unlock_output_dir(fd: int | None) -> None:
    """Let go of a folder held by :func:`lock_output_dir`."""
    if fd is not None:
        os.close(fd)

"""Which files a run analyses: files, folders (searched for videos) and glob patterns."""

from __future__ import annotations

import glob
from collections import Counter
from pathlib import Path

from videmo.errors import VidemoError

VIDEO_SUFFIXES = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".flv",
        ".wmv",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".3gp",
        ".ogv",
        ".mxf",
        ".gif",
    ]
)


def collect_inputs(
    specs: list[str], exclude: Path | None = None, skipped: Counter | None = None
) -> list[Path]:
    """Expand files, folders (searched recursively for videos) and glob patterns, in order.

    Hidden files in a folder (names starting with a dot, such as the ``._clip.mp4``
    resource forks macOS leaves on shared drives) are not videos and are skipped.

    Paths keep the form the user gave (a symlink is named after the link, not
    its target); duplicates are dropped by their resolved file. Files under
    ``exclude`` (the output root) are skipped when folders and globs are
    expanded, so a rerun never analyses its own outputs. ``skipped`` counts, by
    extension, the other files found in folders (not videos by their name).
    """
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and _under(path, skip):
            raise VidemoError(
                f"{spec} is the output root {exclude} or lies inside it, where videmo skips "
                "its own outputs: give another -o"
            )
        if path.is_dir():
            candidates = [
                p
                for p in path.rglob("*")
                if p.is_file() and not _hidden(p.relative_to(path)) and not _under(p, skip)
            ]
            found += sorted(p for p in candidates if p.suffix.lower() in VIDEO_SUFFIXES)
            if skipped is not None:
                skipped.update(
                    p.suffix.lower() or "no extension"
                    for p in candidates
                    if p.suffix.lower() not in VIDEO_SUFFIXES
                )
        elif any(ch in spec for ch in "*?[") and not path.exists():
            matches = [Path(p) for p in glob.glob(spec, recursive=True)]
            # A pattern that matches nothing stays as given, so it fails as "no such file"
            # in the batch instead of vanishing (it may be a name with brackets).
            found += sorted(p for p in matches if p.is_file() and not _under(p, skip)) or [path]
        else:
            found.append(path)
    unique: dict[object, Path] = {}
    for p in found:  # one file reached by several paths (links, hard links) is one input
        unique.setdefault(_file_identity(p), p)
    if not unique:
        raise VidemoError(f"no video files found in {' '.join(specs)}")
    return list(unique.values())


def _file_identity(path: Path) -> object:
    """What makes two paths one file: device and inode (hard links too), else the path."""
    try:
        stat = path.stat()
    except OSError:  # missing: it fails later, as given
        return path
    return (stat.st_dev, stat.st_ino)


def _hidden(relative: Path) -> bool:
    """A dot file or a file in a dot folder: macOS ``._clip.mp4`` resource forks, ``.git``."""
    return any(part.startswith(".") for part in relative.parts)


def _under(path: Path, root: Path | None) -> bool:
    return root is not None and path.resolve().is_relative_to(root)


def skipped_note(skipped: Counter) -> str:
    """One line on the files of the folders given that were not taken for videos."""
    n = sum(skipped.values())
    kinds = ", ".join(f"{suffix} ×{count}" for suffix, count in skipped.most_common(5))
    more = ", ..." if len(skipped) > 5 else ""
    return (
        f"{n} file{'s' if n != 1 else ''} in the folders given {'are' if n != 1 else 'is'} "
        f"not a video by name, not analysed ({kinds}{more}); name a file to analyse it anyway"
    )

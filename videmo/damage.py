"""What a damaged input lost: the facts behind a ``damaged`` run (README, "Damaged files").

The map step records the frames each chunk could not decode; the packet index
and the header say whether the file was cut short. This module turns those
into the ``damage`` object of ``run.json`` and the one line of ``batch.csv``.
"""

from __future__ import annotations

import numpy as np

from videmo.pipeline import ChunkResult
from videmo.video import PacketIndex, VideoInfo

#: A header may count a few more frames than a file holds; more is a truncation. (Frames an
#: edit list hides are counted by the header and not held: ``PacketIndex.hidden``.)
HEADER_SLACK_FRAMES = 3
HEADER_SLACK_SHARE = 0.02


def damage_summary(
    info: VideoInfo | None, index: PacketIndex | None, results: list[ChunkResult]
) -> dict | None:
    """What a damaged input lost: decoded frames missing, or a file cut short; None if intact.

    Policy (README, "Damaged files"): everything that decodes is analysed; the
    loss is recorded in run.json and batch.csv and the video is ``damaged``.
    """
    if info is None or index is None:
        return None
    lost = np.sort(np.concatenate([np.zeros(0, np.int64), *[r.lost_frames for r in results]]))
    times = index.times_s(info)
    shortfall = (info.frame_count or 0) - len(index) - index.hidden  # hidden: not frames
    skipped = _skipped_by_demuxer(info, index)
    truncated = (
        bool(index.error)
        or shortfall > max(HEADER_SLACK_FRAMES, HEADER_SLACK_SHARE * (info.frame_count or 0))
        or _cut_short_in_time(info, index)
    )
    if truncated and skipped is not None and not skipped["gaps_s"]:
        skipped = None  # the demuxer's complaint was the cut itself, at the end of the file
    if not len(lost) and not truncated and skipped is None:
        return None
    damage: dict = {
        "frames_indexed": len(index),
        "frames_lost": int(len(lost)),
        "lost_ranges_s": _ranges_s(lost, times),
        "errors": sorted({r.damage for r in results if r.damage}),
    }
    if skipped is not None:
        damage["skipped_by_demuxer"] = skipped
    if truncated:
        damage["truncated"] = {
            "frames_in_header": info.frame_count,
            "readable_until_s": round(float(times[-1]), 3) if len(times) else 0.0,
            "duration_s": info.duration_s,
            "error": index.error,
        }
    return damage


def _cut_short_in_time(info: VideoInfo, index: PacketIndex) -> bool:
    """Whether a file whose header counts no frames (FLV, Matroska) ends before its duration.

    Its packets, of every stream (audio may outlast the video), must span the header's
    duration within the same slack as the frame count check.
    """
    if info.frame_count or not info.duration_s or index.span_s is None:
        return False
    frame_s = 1.0 / info.fps if info.fps else 1.0 / 30
    slack_s = max(HEADER_SLACK_FRAMES * frame_s, HEADER_SLACK_SHARE * info.duration_s)
    return index.span_s < info.duration_s - slack_s


#: A step between two frames' pts this many times the typical one is a gap where frames were.
GAP_STEPS = 1.5


def _skipped_by_demuxer(info: VideoInfo, index: PacketIndex) -> dict | None:
    """What the demuxer dropped while it skipped damaged data (FLV's "Packet mismatch").

    Those packets are in no index, so no decode misses them; the frames are estimated from
    the gaps they leave in the timestamps (steps over ``GAP_STEPS`` typical steps), which
    are looked for only in a file whose demuxer said it skipped data: a variable frame
    rate is not damage.
    """
    if not index.skipped:
        return None
    gaps: list[list[float]] = []
    missing = 0
    if len(index) >= 3:
        steps = np.diff(index.pts)
        step = float(np.median(steps))
        wide = np.flatnonzero(steps > GAP_STEPS * step)
        missing = int(np.sum(np.rint(steps[wide] / step) - 1))
        times = index.times_s(info)
        gaps = [[round(float(times[i]), 3), round(float(times[i + 1]), 3)] for i in wide]
    return {"messages": list(dict.fromkeys(index.skipped))[:5], "frames_missing": missing,
            "gaps_s": gaps}  # fmt: skip


def _ranges_s(lost: np.ndarray, times: np.ndarray) -> list[list[float]]:
    """Runs of consecutive lost frames as [first, last] times in seconds."""
    if not len(lost):
        return []
    breaks = np.flatnonzero(np.diff(lost) > 1) + 1
    return [
        [round(float(times[run[0]]), 3), round(float(times[run[-1]]), 3)]
        for run in np.split(lost, breaks)
    ]


def _span(start: float, end: float) -> str:
    """``1.60-1.93 s``, or ``1.60 s`` for a single frame (not ``1.60-1.60 s``)."""
    return f"{start:.2f} s" if f"{start:.2f}" == f"{end:.2f}" else f"{start:.2f}-{end:.2f} s"


def damage_line(damage: dict) -> str:
    """One line for batch.csv and the terminal."""
    parts = []
    if damage["frames_lost"]:
        spans = ", ".join(_span(a, b) for a, b in damage["lost_ranges_s"][:3])
        more = " ..." if len(damage["lost_ranges_s"]) > 3 else ""
        parts.append(
            f"{damage['frames_lost']} of the {damage['frames_indexed']} frames in the file "
            f"did not decode ({spans}{more})"
        )
    if "skipped_by_demuxer" in damage:
        skip = damage["skipped_by_demuxer"]
        where = ", ".join(_span(a, b) for a, b in skip["gaps_s"][:3])
        more = " ..." if len(skip["gaps_s"]) > 3 else ""
        missing = (
            f": about {skip['frames_missing']} frame{'s' if skip['frames_missing'] > 1 else ''} "
            f"missing ({where}{more})"
            if skip["frames_missing"] else ""
        )  # fmt: skip
        parts.append(f"the demuxer skipped damaged data ({skip['messages'][0]}){missing}")
    if "truncated" in damage:
        cut = damage["truncated"]
        whole = f" of {cut['duration_s']:.1f} s" if cut["duration_s"] else ""
        # How much is missing, in the header's terms: the count above only covers the
        # frames still in the file, so alone it would read as nearly intact.
        decoded = damage["frames_indexed"] - damage["frames_lost"]
        header = cut.get("frames_in_header")
        frames = f", {decoded} of {header} frames" if header else ""
        parts.append(
            f"file cut short: readable until {cut['readable_until_s']:.1f} s{whole}{frames}"
        )
    return "damaged: " + "; ".join(parts)

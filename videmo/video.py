"""Video input with PyAV: probe, demux-only packet index, frame reading (writing: encode.py).

Why PyAV and not ``cv2.VideoCapture``: we need true presentation timestamps (variable frame
rate sources), exact seeking for chunked parallel reads, the display matrix (phone videos)
and audio remuxing - none of which OpenCV exposes reliably.

Frame identity: a frame's global ``index`` is the rank of its pts among all (non-discarded)
video packets of the file, as given by :func:`index_packets`. Because the index is computed
from the container alone, any chunked read ``[a, b) + [b, c)`` yields exactly the frames of
one read ``[a, c)``.

Errors: every input problem raises :class:`~videmo.errors.VideoError` with a one-line
message. Still images (``.jpg``, ``.png`` ...) are rejected: videmo builds timelines, and a
1-frame "video" with no frame rate would silently produce a meaningless one.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import av.logging
import cv2
import numpy as np

from videmo.errors import VideoError

__all__ = [
    "DecodeReport",
    "Frame",
    "PacketIndex",
    "VideoInfo",
    "index_packets",
    "probe",
    "read_frames",
]

# Demuxers for still images (plus *_pipe ones); the module docstring says why we reject them.
_STILL_IMAGE_FORMATS = ("image2", "gif_pipe")
_Input = av.container.InputContainer
_ROTATIONS = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180}
_ROTATIONS[270] = cv2.ROTATE_90_COUNTERCLOCKWISE


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video; sizes are *display* sizes (after rotation)."""

    path: Path
    width: int
    height: int
    rotation: int  # clockwise degrees applied to decoded frames to make them upright
    fps: float  # average rate, informational only (never used for timestamps)
    duration_s: float | None
    frame_count: int | None  # from the header, may be wrong or None
    time_base: Fraction
    start_pts: int  # time_s = (pts - start_pts) * time_base
    codec: str
    has_audio: bool
    video_streams: int = 1  # the first is analysed; more are noted in run.json
    #: Width of a stored pixel over its height; frames are scaled by it to ``width``.
    pixel_aspect: float = 1.0


@dataclass(frozen=True)
class PacketIndex:
    """Presentation timestamps of all video packets, sorted: frame ``i`` has ``pts[i]``.

    Built without decoding, so it is cheap enough to split a video into chunks up front.
    ``error`` is set when demuxing stopped early on a damaged file (the index then covers
    the readable part only).
    """

    pts: np.ndarray  # int64, ascending, unique
    keyframe: np.ndarray  # bool, per sorted entry
    error: str | None = None
    #: Seconds the packets of all streams span: a file cut short where no header counts
    #: frames (FLV, Matroska) is recognised by this falling short of the header's duration.
    span_s: float | None = None
    #: Errors the demuxer logged while it skipped damaged data and read on (FLV's "Packet
    #: mismatch"): packets it dropped are in no index, so no decode can notice them missing.
    skipped: tuple[str, ...] = ()
    #: Packets an mp4 edit list hides (flagged DISCARD): not frames, but the header's frame
    #: count includes them. A file trimmed without re-encoding hides up to a keyframe interval.
    hidden: int = 0
    #: Frames are told apart by the order the decoder gives them, not by their timestamps:
    #: set for AVI with B-frames (AVI stores no presentation times: FFmpeg numbers packets in
    #: decoding order) and for streams whose timestamps repeat or start again (recordings joined
    #: with ``cat``). Such a file is read from its start in one piece; see ``index_packets``.
    by_output: bool = False
    #: Times the stream's timestamps started again (recordings joined): the sound's do too.
    restarts: int = 0

    def __len__(self) -> int:
        return int(self.pts.size)

    def times_s(self, info: VideoInfo) -> np.ndarray:
        """Seconds from the stream start for every frame (float64)."""
        tb = info.time_base
        return (self.pts - info.start_pts).astype(np.float64) * tb.numerator / tb.denominator


#: Decoded pixel formats whose planes are read directly (8-bit 4:2:0, the H.264/HEVC/VP9 norm).
_PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})
#: Limited-range luma (16..235) to full-range gray (0..255), as a BGR -> gray conversion gives.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class Frame:
    """One decoded frame, upright, with its pixels converted only when asked for.

    ``image`` (BGR, what OpenCV drawing and the annotated video need) is made on first
    use. The analysis never asks for it: the detector gets its small frame straight
    from FFmpeg's scaler (:meth:`resized`) and face crops come from the luma plane
    (:meth:`luma`), so no full-resolution colour frame is made for analysis.
    """

    __slots__ = (
        "index", "pts", "time_s", "_source", "_shown", "rotation", "_image", "_luma", "_limited"
    )  # fmt: skip

    def __init__(
        self,
        index: int,
        pts: int,
        time_s: float,
        image: np.ndarray | None = None,
        source: av.VideoFrame | None = None,
        rotation: int = 0,
        shown: tuple[int, int] | None = None,
    ) -> None:
        if image is None and source is None:
            raise ValueError("a Frame needs an image or a decoded source frame")
        self.index = index  # global frame index (presentation order, 0-based)
        self.pts = pts
        self.time_s = time_s  # (pts - start_pts) * time_base: true times, also for VFR
        self._source = source
        # (width, height) the decoded frame is shown at, before rotation, where it is stored at
        # another size (non-square pixels, a stream that changed size midway): it is scaled
        # only when full-size pixels are asked for; the detector's small frame is made from it
        # in one pass (:meth:`resized`)
        stored = (source.width, source.height) if source is not None else None
        self._shown = tuple(shown) if shown is not None and tuple(shown) != stored else None
        self.rotation = rotation  # clockwise degrees applied to make the frame upright
        self._image = image
        self._luma: np.ndarray | None = None
        self._limited = False  # whether _luma is limited-range video luma (16..235)

    @property
    def source(self) -> av.VideoFrame | None:
        """The decoded frame at the size it is shown at (scaled on first use)."""
        if self._shown is not None:
            self._source = self._source.reformat(*self._shown)
            self._shown = None
        return self._source

    @property
    def image(self) -> np.ndarray:
        """The upright BGR frame (uint8, H x W x 3), converted on first use."""
        if self._image is None:
            self._image = _to_bgr(self.source, self.rotation)
        return self._image

    @property
    def shape(self) -> tuple[int, int]:
        """Upright (height, width), without converting anything."""
        if self._image is not None or self._source is None:
            return self.image.shape[:2]
        w, h = self._shown or (self._source.width, self._source.height)
        return (h, w) if self.rotation in (0, 180) else (w, h)

    def luma(self) -> np.ndarray:
        """The upright full-resolution grayscale frame, read from the Y plane when possible.

        For 8-bit 4:2:0 video the Y plane is used as it is (a view, no copy, unless the
        frame is rotated), usually in limited range: :meth:`gray` maps a region of it to
        full range. Otherwise the BGR frame is converted to gray. Which of the two does
        not depend on whether :attr:`image` was made first (the detector makes it for
        frames it does not need to shrink): optical flow and shot-cut detection compare
        the luma of consecutive frames, so every frame's must be on one scale.
        """
        if self._luma is None:
            if self.source is not None and self._planar():
                plane = self.source.planes[0]
                y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                y = y[: self.source.height, : self.source.width]
                code = _ROTATIONS[self.rotation]
                self._luma = y if code is None else cv2.rotate(y, code)
                self._limited = self._limited_range()
            else:
                self._luma = cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY)
        return self._luma

    def gray(self, region: np.ndarray) -> np.ndarray:
        """Full-range gray from a region of :meth:`luma` (maps limited-range luma as BGR->gray)."""
        if self._limited:
            return cv2.LUT(region, _LIMITED_TO_FULL)
        return region

    def _planar(self) -> bool:
        return self._source is not None and self._source.format.name in _PLANAR_420

    def _limited_range(self) -> bool:
        """MPEG (limited) range unless the stream says JPEG (full) range."""
        return self._source.format.name != "yuvj420p" and int(self._source.color_range) != 2

    def resized(self, max_side: int) -> tuple[np.ndarray, float]:
        """The upright BGR frame shrunk so its longest side is at most ``max_side``, and the scale.

        Shrinks straight from the decoded YUV frame with FFmpeg's area scaler when it
        is at hand: one pass at the small size, several times cheaper than converting
        the full frame and resizing it.
        """
        height, width = self.shape
        scale = min(1.0, max_side / max(height, width))
        if scale >= 1.0:
            return self.image, 1.0
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if self._source is None:
            return cv2.resize(self.image, size, interpolation=cv2.INTER_AREA), scale
        w, h = size if self.rotation in (0, 180) else size[::-1]
        small = self._source.reformat(width=w, height=h, format="bgr24", interpolation="AREA")
        code = _ROTATIONS[self.rotation]
        small = small.to_ndarray()
        return (small if code is None else cv2.rotate(small, code)), scale


@dataclass
class DecodeReport:
    """How complete a :func:`read_frames` call was; pass one in and read it afterwards.

    It is updated while frames are yielded, so it is also valid after a ``VideoError``
    interrupted the read. ``missing`` lists indices in ``[start, stop)`` that the packet
    index promised but the decoder never produced (e.g. a damaged tail).
    """

    expected: int = 0  # frames in [start, stop) per the packet index
    decoded: int = 0  # of those, how many came out of the decoder
    yielded: int = 0  # how many were yielded (after `every`)
    missing: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def complete(self) -> bool:
        """True when every indexed frame of the range was decoded without error."""
        return self.error is None and self.decoded == self.expected


# --------------------------------------------------------------------------- opening


def _one_line(text: object) -> str:
    """Collapse FFmpeg's multi-line error text into one line for the CLI."""
    return re.sub(r"\s+", " ", str(text)).strip()


def _ffmpeg_reason(err: Exception) -> str:
    """The useful part of a PyAV error: strerror plus FFmpeg's last log line, no errno."""
    reason = getattr(err, "strerror", None) or str(err)
    log = getattr(err, "log", None)
    if log and len(log) >= 3 and log[2]:
        reason = f"{reason} ({log[2].strip()})"
    return _one_line(reason)


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        pattern = any(ch in str(path) for ch in "*?[")  # a glob kept as given (videmo.inputs)
        raise VideoError(
            f"{p}: no such file{', and no file matches it as a pattern' if pattern else ''}"
        )
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video file")
    if not p.is_file():  # a FIFO, socket or device: videmo reads a file more than once
        raise VideoError(f"{p}: is not a regular file (a pipe or device); save it to a file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: file is empty")
    return p


#: Readers in this process that have FFmpeg's log on (the decode thread opens files while
#: the main thread may be indexing the next one): the level is restored by the last to leave.
_LOG_USERS = [0]
_LOG_LOCK = threading.Lock()
_LOG_SAVED: list = [None, True]


@contextlib.contextmanager
def _ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error log, captured so nothing is printed: ``(level, who, text)`` records
    of this thread.

    PyAV keeps logging off by default; we raise the level only around ``av.open`` (so
    PyAV attaches FFmpeg's last error line, e.g. "moov atom not found", to its errors) and
    the index pass (to hear the demuxer skip damaged data). Repeats are not suppressed: the
    same file read twice must log the same.
    """
    with _LOG_LOCK:
        if _LOG_USERS[0] == 0:
            _LOG_SAVED[:] = [av.logging.get_level(), av.logging.get_skip_repeated()]
            av.logging.set_level(av.logging.ERROR)
            av.logging.set_skip_repeated(False)
        _LOG_USERS[0] += 1
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        with _LOG_LOCK:
            _LOG_USERS[0] -= 1
            if _LOG_USERS[0] == 0:
                av.logging.set_level(_LOG_SAVED[0])
                av.logging.set_skip_repeated(_LOG_SAVED[1])


def _open(p: Path, log: list | None = None) -> _Input:
    """Open ``p`` for reading, turning every FFmpeg/OS failure into a VideoError.

    ``log`` receives the errors FFmpeg logged while opening (the demuxer reads ahead).
    """
    try:
        with _ffmpeg_errors() as logs:
            container = av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{p}: not a readable video file: {_ffmpeg_reason(err)}") from None
    finally:
        if log is not None:
            log.extend(logs)
    if container.format.name in _STILL_IMAGE_FORMATS or container.format.name.endswith("_pipe"):
        container.close()
        raise VideoError(f"{p}: is a still image ({container.format.name}), not a video")
    return container


def _moving_streams(container: _Input) -> list[av.VideoStream]:
    """The video streams that are moving pictures: not cover art (``attached_pic``).

    A song with its album cover is a video stream of one picture to FFmpeg; a timeline of it
    would be one meaningless frame at a 90 kHz "frame rate".
    """
    cover = av.stream.Disposition.attached_pic
    return [s for s in container.streams.video if not s.disposition & cover]


def _video_stream(container: _Input, p: Path) -> av.VideoStream:
    """The stream videmo analyses: the first video stream that is not cover art."""
    streams = _moving_streams(container)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        if container.streams.video:
            kinds = [("cover picture" if k == "video" else k) for k in kinds]
        container.close()
        raise VideoError(f"{p}: has no video stream (streams: {', '.join(kinds)})")
    return streams[0]


# --------------------------------------------------------------------------- probe


#: Packets ``probe`` may find undecodable before its first frame before it gives up on a
#: file (about 10 s of 25-fps video): a damaged start is analysed from the first frame that
#: decodes, while a stream no packet of which decodes is refused without reading it all.
FIRST_FRAME_MAX_BAD_PACKETS = 250


def _first_frame(container: _Input, stream: av.VideoStream, p: Path) -> av.VideoFrame:
    """Decode the first decodable frame: proves the stream is decodable and carries the
    display matrix. Packets the decoder rejects are passed over, as in the analysis."""
    rejected: av.FFmpegError | None = None
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                rejected, bad = err, bad + 1
                if bad > FIRST_FRAME_MAX_BAD_PACKETS:
                    break
                continue
            if frames:
                return frames[0]
    except av.FFmpegError as err:
        rejected = err
    if rejected is not None:
        reason = _ffmpeg_reason(rejected)
        raise VideoError(f"{p}: video stream cannot be decoded: {reason}") from None
    raise VideoError(f"{p}: video stream has no decodable frames")


def _clockwise(frame: av.VideoFrame) -> int:
    """Clockwise degrees to make the frame upright (FFmpeg reports counter-clockwise)."""
    return int(round(-frame.rotation / 90.0)) * 90 % 360


def _duration_s(container: _Input, stream: av.VideoStream) -> float | None:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's header and first frame; raise VideoError if it is not a usable video."""
    p = _check_path(path)
    with _open(p) as container:
        stream = _video_stream(container, p)
        first = _first_frame(container, stream, p)
        rotation = _clockwise(first)
        pixel_aspect = _pixel_aspect(stream)
        width, height = max(1, round(first.width * pixel_aspect)), first.height
        if rotation in (90, 270):
            width, height = height, width
        if stream.start_time is not None:
            start_pts = stream.start_time
        else:
            start_pts = first.pts if first.pts is not None else 0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return VideoInfo(
            path=p,
            width=width,
            height=height,
            rotation=rotation,
            fps=float(rate) if rate else 0.0,
            duration_s=_duration_s(container, stream),
            frame_count=stream.frames or None,
            time_base=Fraction(stream.time_base),
            start_pts=int(start_pts),
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
            video_streams=len(_moving_streams(container)),
            pixel_aspect=pixel_aspect,
        )


def _pixel_aspect(stream: av.VideoStream) -> float:
    """Width over height of one stored pixel (DV, DVD, HDV and broadcast store non-square
    pixels): frames are scaled to the shape a player shows, as faces must be seen."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(sar) if sar and 0.1 < float(sar) < 10 else 1.0


# --------------------------------------------------------------------------- packet index


class _Demuxed(NamedTuple):
    pts: list[int]
    dts: list[int | None]
    key: list[bool]
    error: str | None
    span_s: float | None
    skipped: list[str]
    hidden: int
    demuxer: str
    reordered: bool  # the codec shows frames in another order than it decodes them


def _demux_pts(p: Path) -> _Demuxed:
    """``(pts, keyframe)`` per real video packet in file order, an error if cut short, the
    seconds the file's packets span (all streams: audio may outlast the video), the
    errors the demuxer logged while skipping damaged data, and the packets an edit list hid.

    Skipped: flush packets (size 0) and packets flagged DISCARD (mp4 edit-list pre-roll,
    which the decoder drops, so they are not frames). A packet without pts uses its dts, and
    one with neither is placed right after the previous one.
    """
    pts: list[int] = []
    dts: list[int | None] = []
    key: list[bool] = []
    extent: dict[int, list] = {}  # stream index -> [first pts, last pts + duration, time base]
    error = None
    hidden = 0
    records: list[tuple[int, str, str]] = []
    with _ffmpeg_errors() as logs, _open(p, records) as container:
        video = _video_stream(container, p)
        demuxer = container.format.name
        try:
            for packet in container.demux():
                if packet.size == 0 or packet.is_discard:
                    hidden += bool(packet.size) and packet.stream.index == video.index
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:  # integers per stream; seconds only once, at the end
                    end = ts + (packet.duration or 0)
                    seen = extent.setdefault(packet.stream.index, [ts, end, packet.time_base])
                    seen[0], seen[1] = min(seen[0], ts), max(seen[1], end)
                if packet.stream.index != video.index:
                    continue
                if ts is None:
                    ts = pts[-1] + 1 if pts else 0
                pts.append(ts)
                dts.append(packet.dts)
                key.append(packet.is_keyframe)
        except av.FFmpegError as err:
            error = _ffmpeg_reason(err)
    skipped = [text.strip() for _, who, text in [*records, *logs] if who == demuxer]
    reordered = bool(video.codec_context.has_b_frames)
    return _Demuxed(pts, dts, key, error, _span_s(extent), skipped, hidden, demuxer, reordered)


def _span_s(extent: dict[int, list]) -> float | None:
    """Seconds from the earliest packet start to the latest packet end over all streams."""
    known = [(float(a * tb), float(b * tb)) for a, b, tb in extent.values() if tb is not None]
    if not known:
        return None
    return max(end for _, end in known) - min(start for start, _ in known)


def index_packets(path: str | os.PathLike[str]) -> PacketIndex:
    """Demux (no decoding) the first video stream and index its packets in frame order.

    A damaged file gives the index of its readable part with ``error`` set; reading those
    frames then reports the damage (see :func:`read_frames`).
    """
    demuxed = _demux_pts(_check_path(path))
    if _needs_output_order(demuxed):
        return _output_order_index(demuxed)
    pts_arr = np.asarray(demuxed.pts, dtype=np.int64)
    # Sort into presentation order (B-frames come before the frames they follow).
    uniq, inverse = np.unique(pts_arr, return_inverse=True)
    key_u = np.zeros(uniq.size, dtype=bool)
    np.logical_or.at(key_u, inverse, np.asarray(demuxed.key, dtype=bool))
    return PacketIndex(uniq, key_u, demuxed.error, demuxed.span_s, tuple(demuxed.skipped),
                       demuxed.hidden)  # fmt: skip


def _needs_output_order(demuxed: _Demuxed) -> bool:
    """Whether timestamps cannot name this stream's frames.

    AVI stores no presentation times (FFmpeg numbers its packets in decoding order, so with
    B-frames the decoder hands frames back with their numbers out of order; without them
    the numbers are the frames' own and the file is read in parallel chunks as any other);
    two packets with one timestamp are two frames; a decoding timestamp that goes back
    means the stream starts again (two recordings joined, a timestamp wrap).
    """
    if demuxed.demuxer == "avi" and demuxed.reordered:
        return True
    if len(set(demuxed.pts)) < len(demuxed.pts):
        return True
    dts = np.asarray([d for d in demuxed.dts if d is not None], dtype=np.int64)
    return bool(dts.size > 1 and (np.diff(dts) < 0).any())


def _output_order_index(demuxed: _Demuxed) -> PacketIndex:
    """Times for a stream whose frames are named by the order the decoder gives them.

    Each packet's time is its decoding timestamp for AVI (its frame number), else its
    presentation timestamp; where the decoding timestamps go back the stream started again,
    and it is moved on to continue from where it was. Sorted, these are the frames' times in
    the order they are decoded; a repeated time is moved one tick on, so times increase.
    """
    raw = demuxed.dts if demuxed.demuxer == "avi" else demuxed.pts
    stamps = np.asarray([r if r is not None else p for r, p in zip(raw, demuxed.pts, strict=True)],
                        dtype=np.int64)  # fmt: skip
    offset, shifted, known, restarts = 0, np.empty_like(stamps), [], 0  # known: dts seen
    for i, (stamp, dts) in enumerate(zip(stamps, demuxed.dts, strict=True)):
        # A missing dts (Matroska gives none for the first packets of a stream with B-frames)
        # says nothing; a known one below the last known one: the stream started again, and
        # continues one frame after where it was.
        if dts is not None and known and dts < known[-1]:
            step = int(np.median(np.diff(known[-10:]))) if len(known) > 1 else 1
            offset += known[-1] + max(1, step) - dts
            restarts += 1
        if dts is not None:
            known.append(dts)
        shifted[i] = stamp + offset
    order = np.argsort(shifted, kind="stable")
    times = shifted[order]
    times = np.maximum.accumulate(times - np.arange(times.size)) + np.arange(times.size)
    keys = np.asarray(demuxed.key, dtype=bool)[order]
    return PacketIndex(times, keys, demuxed.error, demuxed.span_s, tuple(demuxed.skipped),
                       demuxed.hidden, by_output=True, restarts=restarts)  # fmt: skip


# --------------------------------------------------------------------------- reading


def _to_bgr(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    image = frame.to_ndarray(format="bgr24")
    code = _ROTATIONS[rotation]
    return image if code is None else cv2.rotate(image, code)


def _seek_entry(index: PacketIndex, start: int, tries: int) -> int:
    """The index entry to seek to: the ``tries``-th keyframe at or before frame ``start``.

    Entry 0 means "decode from the start of the file", whether or not it is flagged as a
    keyframe (an mp4 edit list can hide the real first keyframe, see ``_demux_pts``).
    """
    keys = np.flatnonzero(index.keyframe[: start + 1])
    if keys.size <= tries:
        return 0
    return int(keys[-1 - tries])


class _SeekedTooFar(Exception):
    """The demuxer landed after the start frame; seek again to an earlier keyframe."""


def _decode_past_errors(container: _Input, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Decode packet by packet, going on after a packet the decoder rejects.

    One corrupt packet then costs the frames that depend on it, not the rest of
    the file (FFmpeg's own command line behaves the same way). Errors of the
    demuxer itself (a truncated file) still end the read.
    """
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
    try:
        yield from stream.decode(None)
    except av.error.InvalidDataError:
        return


def _decoded(
    container: _Input, stream: av.VideoStream, index: PacketIndex, start: int, first_check: bool
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(global_index, av_frame)`` in presentation order from the current position.

    Frames without pts take the index after the previous one; duplicates and frames that
    arrive out of order are dropped so indices (and times) strictly increase.
    """
    last = -1
    for frame in _decode_past_errors(container, stream):
        if frame.pts is None:
            i = last + 1
        else:
            i = int(np.searchsorted(index.pts, frame.pts))
            if i >= len(index) or index.pts[i] != frame.pts:
                i = last + 1
        if i >= len(index) or i <= last:
            continue
        if first_check and last < 0 and i > start:
            raise _SeekedTooFar
        last = i
        yield i, frame


def _seek(
    container: _Input, stream: av.VideoStream, index: PacketIndex, entry: int, fresh: bool
) -> bool:
    """Seek to index entry ``entry``; returns whether the first frame must be checked.

    A fresh container needs no seek for entry 0. Seeking before the first pts fails in some
    demuxers (flv), so entry 0 seeks to the first indexed pts. If a fresh container cannot
    seek at all we decode from the start: slower, but the same frames.
    """
    if entry == 0 and fresh:
        return False
    try:
        container.seek(int(index.pts[entry]), backward=True, any_frame=False, stream=stream)
    except av.FFmpegError as err:
        if not fresh:
            raise VideoError(f"{container.name}: cannot seek: {_ffmpeg_reason(err)}") from None
        return False
    return entry > 0


def _decode_from(
    container: _Input, stream: av.VideoStream, index: PacketIndex, start: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Position the decoder at or before ``start`` and yield ``(index, frame)`` pairs.

    Seeks to the keyframe at or before the start frame; demuxers seek on their own sample
    tables (dts based for mp4), so with B-frames they may land after it. We detect that on
    the first decoded frame and retry from the previous keyframe (or the file start).
    """
    if index.by_output:  # no timestamp to seek to: decode from the start, count frames
        yield from enumerate(_decode_past_errors(container, stream))
        return
    tries = 0
    while True:
        entry = _seek_entry(index, start, tries) if start > 0 else 0
        first_check = _seek(container, stream, index, entry, fresh=tries == 0)
        try:
            yield from _decoded(container, stream, index, start, first_check)
            return
        except _SeekedTooFar:
            tries += 1
            stream.codec_context.flush_buffers()


def read_frames(
    path: str | os.PathLike[str],
    start: int = 0,
    stop: int | None = None,
    every: int = 1,
    index: PacketIndex | None = None,
    *,
    report: DecodeReport | None = None,
    bgr: bool = True,
) -> Iterator[Frame]:
    """Yield upright frames with global index in ``[start, stop)`` and ``index % every == 0``.

    With ``bgr`` (the default) each frame's BGR image is made here, as it is decoded;
    without it the frame is left as FFmpeg decoded it (the analysis reads the luma plane
    and a downscaled frame, see :class:`Frame`).

    ``index`` (from :func:`index_packets`) is built when not given; pass it when reading a
    file in chunks so it is computed once. A damaged file yields every readable frame of the
    range, then raises VideoError naming where it failed and how many frames were lost;
    ``report`` (optional, see :class:`DecodeReport`) gives the same facts as data. When
    ``start > 0`` the reader seeks to the keyframe before it and decodes only from there.
    """
    if start < 0 or every < 1 or (stop is not None and stop < start):
        raise ValueError(f"bad frame range: start={start} stop={stop} every={every}")
    info = probe(path)
    index = index if index is not None else index_packets(info.path)
    stop = len(index) if stop is None else min(stop, len(index))
    report = report if report is not None else DecodeReport()
    report.expected = max(0, stop - start)
    if start >= stop:
        return
    seen = np.zeros(stop - start, dtype=bool)
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        try:
            frames = _select(container, stream, info, index, start, stop, every, seen, report)
            for frame in frames:
                if bgr:
                    frame.image  # noqa: B018 - convert now, in the decoding thread
                yield frame
        except av.FFmpegError as err:
            report.error = _ffmpeg_reason(err)
        finally:
            report.missing = (start + np.flatnonzero(~seen)).tolist()
    if report.missing:
        # Frame threading swallows some decode errors (the frame just never comes out), so
        # missing frames - not only exceptions - are what defines a failed read.
        report.error = report.error or "the decoder produced no picture for them"
        raise VideoError(_failure_message(info.path, start, stop, seen, report))


def _failure_message(
    path: Path, start: int, stop: int, seen: np.ndarray, report: DecodeReport
) -> str:
    """One line: where decoding stopped, how much of the range was read, and why."""
    last = start + int(np.flatnonzero(seen)[-1]) if seen.any() else None
    where = f"after frame {last}" if last is not None else f"at frame {start}"
    return (
        f"{path}: decoding failed {where} ({report.decoded} of {report.expected} frames in "
        f"[{start}, {stop}) read, {len(report.missing)} lost, first lost: frame "
        f"{report.missing[0]}): {report.error}"
    )


def _select(
    container: _Input,
    stream: av.VideoStream,
    info: VideoInfo,
    index: PacketIndex,
    start: int,
    stop: int,
    every: int,
    seen: np.ndarray,
    report: DecodeReport,
) -> Iterator[Frame]:
    """Apply the range and `every` to decoded frames; convert only the selected ones."""
    tb = info.time_base
    scale = tb.numerator / tb.denominator
    # The size every frame is given before rotation: the first frame's, in square pixels.
    shown = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    for i, frame in _decode_from(container, stream, index, start):
        if i >= stop:
            break
        if i < start:
            continue
        seen[i - start] = True
        report.decoded += 1
        if i % every == 0:
            pts = int(index.pts[i])
            report.yielded += 1
            time_s = (pts - info.start_pts) * scale
            # non-square pixels, or a stream that changed size midway: one size, as shown
            yield Frame(i, pts, time_s, source=frame, rotation=info.rotation, shown=shown)
        if report.decoded == stop - start:
            break

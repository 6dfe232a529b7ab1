"""Faults found by probing (issue 10): nothing lost, nothing silently wrong.

Each test reproduces one probe on the real clips and fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CREMA_HAP,
    DINNER,
    FAST,
    REPO,
    SINGLE,
    cli_env,
    copy_clip,
    requires_data,
    run_cli,
    videmo_cmd,
)

from videmo.detections import FaceDetections
from videmo.errors import DataError, ModelError, OutputError, SettingsError, VidemoError
from videmo.inputs import Skipped, collect_inputs
from videmo.naming import CLAIM_FILE, claim_output_dir, input_key, safe_name
from videmo.parallel import ray_temp_parent
from videmo.settings import Settings
from videmo.track import TrackerConfig, track

# --------------------------------------------------------------------------- output names


def test_same_named_inputs_never_share_a_folder(tmp_path: Path) -> None:
    a, b, c = (tmp_path / d for d in ("a", "b", "c"))
    for folder in (a, b, c):
        folder.mkdir()
    out = tmp_path / "out"
    first = claim_output_dir(out, a / "clip.mp4")
    second = claim_output_dir(out, b / "clip.mp4")
    third = claim_output_dir(out, c / "clip-2.mp4")
    assert first == out / "clip" and third == out / "clip-2"
    assert second.parent == out and second.name.startswith("clip-") and second != third
    assert len({first, second, third}) == 3
    # stable: asking again, alone or in another order, gives the same folders
    assert claim_output_dir(out, b / "clip.mp4") == second
    assert claim_output_dir(out, a / "clip.mp4") == first
    assert (second / CLAIM_FILE).read_text().strip() == str(b / "clip.mp4")


def test_a_users_own_folder_of_the_same_name_is_never_taken_over(tmp_path: Path) -> None:
    """``out/interview/`` with the user's notes and an old report, no claim: it was claimed
    and its report and timeline replaced. The video now gets ``interview-<hash>``."""
    out = tmp_path / "out"
    mine = out / "interview"
    mine.mkdir(parents=True)
    for name in ("notes.txt", "report.html", "timeline.csv"):
        (mine / name).write_text(f"the user's {name}")
    folder = claim_output_dir(out, tmp_path / "in" / "interview.mp4")
    assert folder != mine and folder.name.startswith("interview-")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "report.html", "timeline.csv"]
    assert (mine / "report.html").read_text() == "the user's report.html"
    # an empty folder of that name (made by the user for the outputs) is taken
    (out / "talk").mkdir()
    assert claim_output_dir(out, tmp_path / "in" / "talk.mp4") == out / "talk"


def test_names_of_the_batch_summary_and_files_of_the_users_are_never_video_folders(
    tmp_path: Path,
) -> None:
    """``batch.csv.mp4`` took the folder ``batch.csv``: no summary, then every rerun refused;
    a plain file ``OUT/z`` failed ``z.mp4`` on every run."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "z").write_text("the user's file")
    for name in ("batch.csv", "report.html", "z"):
        folder = claim_output_dir(out, tmp_path / "in" / f"{name}.mp4")
        assert folder.name.startswith(f"{name}-") and folder.is_dir(), folder
    assert (out / "z").read_text() == "the user's file"


def test_hard_links_to_one_file_are_one_input(tmp_path: Path) -> None:
    """Hard links in one batch: the second failed "being written by another videmo run"."""
    original = tmp_path / "in" / "a.mp4"
    original.parent.mkdir()
    original.write_bytes(b"0")
    (tmp_path / "links").mkdir()
    os.link(original, tmp_path / "links" / "a.mp4")
    skipped = Skipped()
    assert collect_inputs([str(tmp_path / "in"), str(tmp_path / "links")], None, skipped) == [
        original
    ]
    # said, not silent: three names given, one video analysed (as a single video: no batch.csv)
    assert skipped.repeats == [(tmp_path / "links" / "a.mp4", original)]
    assert skipped.notes() == [
        f"1 input named a file given before (e.g. {tmp_path / 'links' / 'a.mp4'}, the same "
        f"file as {original}): each file is analysed once"
    ]


def test_a_long_name_and_its_twin_both_get_folders(tmp_path: Path) -> None:
    """Two 251-character names: the twin's ``-<hash>`` must not push it past 255 bytes
    (it failed with "File name too long"); multi-byte characters are never cut in half."""
    out = tmp_path / "out"
    for stem in ("M" * 251, "é" * 125):
        first = claim_output_dir(out, tmp_path / "a" / f"{stem}.mp4")
        twin = claim_output_dir(out, tmp_path / "b" / f"{stem}.mp4")
        assert first.name == stem and twin != first and twin.is_dir()
        assert len(os.fsencode(twin.name)) <= 255 and twin.name.startswith(stem[:100])


@requires_data
def test_a_folder_another_run_is_writing_is_left_to_it(tmp_path: Path) -> None:
    """Two copies of one job started together cleared each other's outputs mid-write. A run
    holds each video's folder until the video is finished; the other run leaves it alone."""
    from videmo.naming import lock_output_dir, unlock_output_dir

    out = tmp_path / "out"
    folder = claim_output_dir(out, SINGLE)
    (folder / "timeline.csv").write_text("being written")  # the other run's partial output
    held = lock_output_dir(folder)  # as the other run's driver holds it
    try:
        line = run_cli("run", SINGLE, "-o", out, *FAST).assert_one_line_error()
        assert "is being written by another videmo run" in line
        assert (folder / "timeline.csv").read_text() == "being written"  # not cleared
        assert (folder / CLAIM_FILE).is_file()  # nor its claim given back
    finally:
        unlock_output_dir(held)
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()  # finished: the folder is free
    assert (folder / "run.json").is_file()


@requires_data
def test_a_second_batch_into_a_root_a_batch_is_writing_is_refused_whole(tmp_path: Path) -> None:
    """Two batches into one root each failed the videos the other held, and the last to
    finish wrote a batch.csv calling finished folders "failed". A batch holds its root."""
    from videmo.naming import lock_output_dir, unlock_output_dir

    clips = tmp_path / "clips"
    copy_clip(SINGLE, clips)
    copy_clip(CREMA_HAP, clips)
    out = tmp_path / "out"
    out.mkdir()
    held = lock_output_dir(out)  # as the first batch's driver holds it
    try:
        line = run_cli("run", clips, "-o", out, *FAST).assert_one_line_error()
        assert f"{out} is being written by another videmo run" in line
        assert not any(out.iterdir())  # no folder claimed, no batch.csv written
        single = run_cli("run", SINGLE, "-o", out, *FAST)  # one video: its own folder only
        single.assert_ok()
    finally:
        unlock_output_dir(held)
    run_cli("run", clips, "-o", out, *FAST).assert_ok()  # the root is free again
    assert (out / "batch.csv").is_file()


@requires_data
def test_an_input_that_fails_leaves_no_folder_and_takes_no_name(tmp_path: Path) -> None:
    """An empty talk.mp4 fails; it must not keep the name ``talk`` from the real one."""
    empty = tmp_path / "bad" / "talk.mp4"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    good = copy_clip(SINGLE, tmp_path / "good", "talk.mp4")
    out = tmp_path / "out"
    first = run_cli("run", empty, good, "-o", out, *FAST)
    assert first.rc == 1 and "file is empty" in first.stderr
    assert first.stdout.split() == [str(out / "talk")]
    assert sorted(p.name for p in out.iterdir()) == ["batch.csv", "talk"]
    import pandas as pd

    batch = pd.read_csv(out / "batch.csv", keep_default_na=False).set_index("video")
    assert batch.loc[str(empty), "output"] == "" and batch.loc[str(good), "output"] == str(
        out / "talk"
    )


@requires_data
def test_a_batch_killed_before_its_first_video_finished_says_so_in_batch_csv(
    tmp_path: Path,
) -> None:
    """``kill -9`` of the driver as soon as the work started (each dinner clip takes seconds):
    batch.csv, written when the work starts and then as videos finish, lists every input as
    unfinished. Before, a batch killed before a video finished left no summary at all."""
    import signal
    import subprocess
    import time

    import pandas as pd

    folder, out = tmp_path / "in", tmp_path / "out"
    inputs = [copy_clip(DINNER, folder, f"clip{k}.mp4") for k in range(3)]
    command = videmo_cmd("run", folder, "-o", out, "--workers", 0, *FAST)
    proc = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "batch.csv").is_file() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert batch["video"].tolist() == [str(p) for p in inputs]
    assert set(batch["status"]) == {"unfinished"}


def test_a_finish_held_back_by_the_summarys_time_window_is_written_at_the_next_call(
    tmp_path: Path,
) -> None:
    """A video finishing within 2 s of the last write stayed "unfinished" in batch.csv until
    the next video finished (minutes, for a long one): a kill -9 then understated the work."""
    import pandas as pd

    from videmo.cli import _BatchSnapshot
    from videmo.progress import RichReporter
    from videmo.runner import VideoRun

    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    snapshot = _BatchSnapshot(paths, tmp_path)
    reporter = RichReporter(enabled=False, inputs=2, on_done=snapshot)
    reporter.start(100, 2)  # the work starts: everything unfinished
    reporter.video_done(VideoRun(0, paths[0], tmp_path / "a", status="done"))  # held back
    statuses = pd.read_csv(tmp_path / "batch.csv")["status"].tolist()
    assert statuses == ["unfinished", "unfinished"]
    snapshot._last -= _BatchSnapshot.EVERY_S  # the window has passed; b is being analysed
    reporter.advance(10)
    assert pd.read_csv(tmp_path / "batch.csv")["status"].tolist() == ["done", "unfinished"]


def test_an_interrupted_batch_on_a_cluster_names_paths_as_given() -> None:
    """On --address the finished runs carry the absolute paths the workers were given: an
    interrupted batch's stdout and batch.csv mixed them with the relative ones as given."""
    from videmo.runner import VideoRun, interrupted_runs

    given = [Path("clips/a.mp4"), Path("clips/b.mp4")]
    done = VideoRun(0, given[0].absolute(), Path("out/a").absolute(), status="done")
    runs = interrupted_runs(given, {0: done}, out_root=Path("out"))
    assert [(r.path, r.out_dir, r.status) for r in runs] == [
        (given[0], Path("out/a"), "done"), (given[1], None, "interrupted"),
    ]  # fmt: skip
    assert done.path == given[0].absolute()  # the run's own record is left as it is


@requires_data
def test_inputs_that_fail_on_ray_workers_name_no_folder_in_batch_csv(tmp_path: Path) -> None:
    """On Ray the workers probe the inputs and give failed ones' claims back; batch.csv
    still named those removed folders."""
    import pandas as pd

    folder = tmp_path / "in"
    copy_clip(SINGLE, folder, "a.mp4")
    (folder / "b.mp4").write_bytes(b"")
    (folder / "c.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = run_cli("run", folder, "-o", out, "--workers", "2", *FAST)
    assert result.rc == 1, result
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert batch["status"].tolist() == ["done", "failed", "failed"], batch
    assert batch["output"].tolist() == [str(out / "a"), "", ""]
    assert sorted(p.name for p in out.iterdir()) == ["a", "batch.csv"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("...mp4", "video"), ("..mp4", "video"), (".hidden.mp4", "hidden.mp4"[:-4]),
     ("a\nb.mp4", "a_b"), ("interview [final].mp4", "interview [final]")],
)  # fmt: skip
def test_folder_names_stay_inside_the_root(name: str, expected: str) -> None:
    assert safe_name(Path(name)) == expected


def test_invalid_utf8_name_gets_a_valid_folder_name() -> None:
    raw = os.fsdecode(b"clip-\xff\xfe.mp4")
    name = safe_name(Path(raw))
    name.encode("utf-8")  # does not raise
    assert name.startswith("clip-")


@requires_data
def test_collisions_end_to_end(tmp_path: Path) -> None:
    """`videmo run a/clip.mp4 b/clip.mp4 c/clip-2.mp4`: three folders, three timelines."""
    clips = [
        copy_clip(SINGLE, tmp_path / d, n)
        for d, n in (("a", "clip"), ("b", "clip"), ("c", "clip-2"))
    ]  # noqa: E501
    out = tmp_path / "out"
    result = run_cli("run", *clips, "-o", out, *FAST).assert_ok()
    folders = sorted(p.parent for p in out.rglob("run.json"))
    assert len(folders) == 3, result
    # stdout lists the three output folders, one per line
    assert sorted(Path(line) for line in result.stdout.split()) == folders


def test_output_root_is_skipped_when_expanding_folders(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    (clips / "results" / "x").mkdir(parents=True)
    (clips / "a.mp4").write_bytes(b"0")
    (clips / "results" / "x" / "annotated.mp4").write_bytes(b"0")
    found = collect_inputs([str(clips)], clips / "results")
    assert found == [clips / "a.mp4"]


@requires_data
def test_a_pattern_under_the_output_root_matches_its_videos_not_the_outputs(
    tmp_path: Path,
) -> None:
    """``videmo run 'clips/*.mp4' -o clips`` said "no file matches it as a pattern" although
    it did, while naming the same files one by one worked. The outputs written there are
    left out by their claim files, also by a recursive pattern, and a rerun skips."""
    clips = tmp_path / "clips"
    copy_clip(SINGLE, clips, "a.mp4")
    first = run_cli("run", clips / "*.mp4", "-o", clips, "--no-plots", "--no-report", "-q")
    assert first.assert_ok().stdout.split() == [str(clips / "a")]
    assert (clips / "a" / "annotated.mp4").is_file()
    skipped = Skipped()
    found = collect_inputs([str(clips / "**" / "*.mp4")], clips, skipped)
    assert found == [clips / "a.mp4"]
    assert skipped.outputs == [clips / "a" / "annotated.mp4"]
    again = run_cli("run", clips / "**" / "*.mp4", "-o", clips, "--no-plots", "--no-report")
    assert again.rc == 0 and "skipped" in again.stderr, again


def test_earlier_outputs_and_links_in_a_folder_are_left_out_and_said(tmp_path: Path) -> None:
    """A first run into clips/videmo_out, a second with another -o: the second analysed the
    first's annotated.mp4 as a video. Linked folders and broken links were left out silently."""
    clips = tmp_path / "clips"
    (clips / "videmo_out" / "a").mkdir(parents=True)
    (clips / "a.mp4").write_bytes(b"0")
    (clips / "videmo_out" / "a" / ".videmo-input").write_bytes(b"a.mp4")
    (clips / "videmo_out" / "a" / "annotated.mp4").write_bytes(b"0")
    (clips / "videmo_out" / "a" / "timeline.csv").write_bytes(b"0")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.mp4").write_bytes(b"0")
    (clips / "linked").symlink_to(tmp_path / "more")
    (clips / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    skipped = Skipped()
    assert collect_inputs([str(clips)], tmp_path / "res", skipped) == [clips / "a.mp4"]
    assert skipped.outputs == [clips / "videmo_out" / "a" / "annotated.mp4"]
    assert not skipped.not_videos  # an output folder's tables are not "files not videos"
    assert skipped.links == [clips / "gone.mp4", clips / "linked"]
    notes = skipped.notes()
    assert "1 video in earlier videmo output folders" in notes[0]
    assert "2 links in the folders given not followed" in notes[1]
    assert collect_inputs([str(clips / "linked")]) == [clips / "linked" / "b.mp4"]
    skipped = Skipped()  # a quoted pattern (job files' inputs are patterns) is searched alike
    by_pattern = collect_inputs([str(clips / "**" / "*.mp4")], None, skipped)
    assert by_pattern == [clips / "a.mp4", clips / "linked" / "b.mp4"]  # glob follows links
    assert skipped.outputs == [clips / "videmo_out" / "a" / "annotated.mp4"]
    with pytest.raises(VidemoError, match="no video files found"):
        collect_inputs([str(clips / "videmo_out" / "*" / "*.mp4")])
    given = clips / "videmo_out" / "a" / "annotated.mp4"
    assert collect_inputs([str(given)]) == [given]  # named: taken


def test_a_pattern_matching_folders_searches_them_as_the_shell_would(tmp_path: Path) -> None:
    """``inputs = ["clips/*/"]`` in a job (no shell to expand it) analysed nothing of the
    folders it matched, and ``clips/*`` dropped ``clips/sub/`` silently while taking
    ``labels.csv`` as a video."""
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    for name in ("a.mp4", "labels.csv", "sub/b.mp4", "sub/c.flv"):
        (clips / name).write_bytes(b"0")
    (clips / "out" / "a").mkdir(parents=True)  # an earlier run's output folder
    (clips / "out" / "a" / ".videmo-input").write_bytes(b"a.mp4")
    (clips / "out" / "a" / "annotated.mp4").write_bytes(b"0")
    for pattern in (f"{clips}/*/", f"{clips}/*"):
        skipped = Skipped()
        found = collect_inputs([pattern], None, skipped)
        expected = [clips / "sub" / "b.mp4", clips / "sub" / "c.flv"]
        if not pattern.endswith("/"):
            expected = [clips / "a.mp4", *expected]
            assert skipped.not_videos == {".csv": 1}  # said in the note, not analysed
        assert found == expected, pattern
        assert not skipped.outputs or skipped.outputs == [clips / "out" / "a" / "annotated.mp4"]


def test_symlinked_input_is_named_after_the_link(tmp_path: Path) -> None:
    target = tmp_path / "target.mp4"
    target.write_bytes(b"0")
    link = tmp_path / "given.mp4"
    link.symlink_to(target)
    assert collect_inputs([str(link)]) == [link]
    assert claim_output_dir(tmp_path / "out", link).name == "given"


@requires_data
def test_a_rerun_through_a_symlinked_folder_resumes_instead_of_redoing(tmp_path: Path) -> None:
    """Same files reached through a link: every video was analysed again into new
    ``<name>-<hash>`` folders beside the finished ones."""
    import pandas as pd

    folder, out = tmp_path / "in", tmp_path / "out"
    copy_clip(SINGLE, folder, "a.mp4")
    copy_clip(CREMA_HAP, folder, "b.flv")
    run_cli("run", folder, "-o", out, *FAST).assert_ok()
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    again = run_cli("run", link, "-o", out, *FAST)
    again.assert_ok()
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "batch.csv"]
    assert pd.read_csv(out / "batch.csv")["status"].tolist() == ["skipped", "skipped"]
    # a different file of the same name still gets a folder of its own
    other = copy_clip(CREMA_HAP, tmp_path / "other", "a.flv")
    assert claim_output_dir(out, other).name.startswith("a-")


@requires_data
def test_output_root_that_is_a_file_fails_before_work(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("x")
    line = run_cli("run", SINGLE, "-o", bad, *FAST).assert_one_line_error()
    assert "is not a folder" in line
    line = run_cli("run", SINGLE, "-o", bad / "sub", *FAST).assert_one_line_error()
    assert line.endswith(f"output root {bad / 'sub'}: {bad} is not a folder")
    # evaluate-clips: a missing folder and an unwritable --csv are refused before any work
    missing = run_cli("evaluate-clips", tmp_path / "nope").assert_one_line_error()
    assert missing.endswith("nope: no such folder")
    labeled = CREMA_HAP.parent
    csv = run_cli("evaluate-clips", labeled, "--csv", bad / "x.csv").assert_one_line_error()
    assert csv.endswith(f"{bad} is not a folder")


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("key", ["smooth_s", "max_gap_s", "chunk_s", "score_threshold"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_floats_are_rejected(key: str, value: float) -> None:
    with pytest.raises(SettingsError, match=f"invalid {key} .* finite"):
        Settings(**{key: value})


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("no_video", "write video = false"),
        ("smoth_s", "did you mean 'smooth_s'"),
        ("out", r"gives output = \.\.\. at its top, above \[settings\]"),
        ("inputs", r"gives inputs = \.\.\. at its top"),
    ],
)
def test_unknown_job_keys_say_what_was_meant(key: str, hint: str) -> None:
    with pytest.raises(SettingsError, match=f"unknown key '{key}' .*{hint}"):
        Settings.from_mapping({key: True}, "job.toml [settings]")


def test_the_api_is_not_told_about_job_files() -> None:
    """The job file's hint for `output` was shown to analyze(..., output=...) too."""
    with pytest.raises(SettingsError, match=r"unknown key 'output' \(analyze\(path, out_dir="):
        Settings().with_options({"output": "d"}, "analyze()")


def test_mistyped_model_path_does_not_fall_back(tmp_path: Path) -> None:
    from videmo.models import model_path

    with pytest.raises(ModelError, match="not found"):
        model_path(tmp_path / "typo" / "emotion_minixception.onnx")
    assert model_path("emotion_minixception.onnx").is_file()  # a bare shipped name still works


# --------------------------------------------------------------------------- model contract


def _toy_model(
    path: Path,
    *,
    channels: int = 1,
    outputs: int = 7,
    head: str = "softmax",
    batch: object = "N",
    spec_changes: dict | None = None,
) -> Path:
    """A linear ONNX model carrying the shipped model's spec, with one fault planted.

    ``head``: "softmax" (probabilities), "scores" (raw scores) or "log_mean" (softmax
    of scores plus log(mean input): NaN for a face darker than mid-grey, fine for the
    blank grey face the loader tries). ``spec_changes`` are written into its stored spec.
    """
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from videmo.emotion import EmotionModel
    from videmo.spec import METADATA_KEY

    spec = EmotionModel().spec
    shape = [spec.input_size, spec.input_size, channels]
    weights = np.random.default_rng(0).normal(size=(int(np.prod(shape)), outputs)) * 0.01
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
    ]
    last = "scores"
    if head == "log_mean":
        nodes += [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Log", ["mean"], ["log"]),
            helper.make_node("Unsqueeze", ["log", "one"], ["log2"]),
            helper.make_node("Add", ["scores", "log2"], ["shifted"]),
        ]
        last = "shifted"
    nodes.append(helper.make_node("Identity" if head == "scores" else "Softmax", [last], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, outputs])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    stored = {**json.loads(spec.to_json()), **(spec_changes or {})}
    model.metadata_props.append(
        onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(stored))
    )
    onnx.save(model, path)
    return path


@requires_data
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"outputs": 5}, "outputs of shape [5] per face; its spec lists 7 classes"),
        ({"channels": 3}, "takes input of shape ['N', 64, 64, 3], not the NHWC 1x64x64"),
        ({"head": "scores"}, "not probabilities"),
        # a spec whose values are of the wrong kind was a traceback deep in preprocessing
        ({"spec_changes": {"mean": "abc"}}, "invalid 'videmo.spec' metadata: mean must be a"),
        ({"spec_changes": {"crops": {"yunet": {"scale": -1}}}}, "scale must be a number above"),
    ],
)
def test_a_model_that_breaks_its_spec_is_refused_before_any_video(
    tmp_path: Path, fault: dict, expected: str
) -> None:
    """Found by probing: such a model failed with a traceback or a numpy broadcast error on
    the first face (a faceless video went through), or wrote raw scores as probabilities."""
    model = _toy_model(tmp_path / "toy.onnx", **fault)
    out = tmp_path / "out"
    line = run_cli("run", SINGLE, "-o", out, *FAST, "--model", model).assert_one_line_error()
    assert expected in line, line
    assert not out.exists()


def test_a_model_exported_for_one_batch_size_runs_at_that_size(tmp_path: Path) -> None:
    """It passed the load check, then every video failed in ONNX Runtime (batches of 64)."""
    from videmo.emotion import EmotionModel

    model = EmotionModel(_toy_model(tmp_path / "one.onnx", batch=1))
    assert model.batch_size == 1
    size = model.spec.input_size
    probs = model.predict(np.full((3, size, size), 90, np.uint8))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # `videmo evaluate` batches through the same code (it sent 256 faces and failed)
    from videmo.train.evaluate import evaluate

    faces = tmp_path / "faces.csv"
    pixels = " ".join(["90"] * 48 * 48)
    rows = [
        f"{k % 7},{pixels},{usage}" for k, usage in enumerate(["Training"] * 3 + ["PublicTest"] * 5)
    ]
    faces.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    result = evaluate(model.path, faces, flip_tta=True)
    assert [split["n"] for split in result["splits"].values()] == [3, 5]


def test_nan_from_the_model_is_an_error_not_a_face_dropped(tmp_path: Path) -> None:
    """NaN is the pipeline's mark for "not classified": a model giving NaN for a face made
    the face vanish from a run reported complete."""
    from videmo.emotion import EmotionModel

    model = EmotionModel(_toy_model(tmp_path / "toy.onnx", head="log_mean"))  # loads
    size = model.spec.input_size
    bright = np.full((2, size, size), 200, np.uint8)
    assert np.allclose(model.predict(bright).sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="NaN or infinite outputs for a face"):
        model.predict(np.zeros((2, size, size), np.uint8))


# --------------------------------------------------------------------------- tracker


def _dets(rows: list[tuple], fps: float = 30.0) -> FaceDetections:
    """Detections (frame, x, y) of 40x40 boxes, or (frame, x, y, w, h)."""
    frames = np.array([r[0] for r in rows])
    return FaceDetections(
        frame=frames,
        time_s=frames / fps,
        xywh=np.array([[*r[1:3], *(r[3:5] or (40, 40))] for r in rows]),
        score=np.ones(len(rows)),
        probs=np.full((len(rows), 7), 1 / 7),
        face_id=np.full(len(rows), -1),
    ).sorted()


def test_isolated_false_detections_never_become_a_face() -> None:
    """Three boxes at frames 10, 100 and 200 of a 300-frame clip are not a face."""
    dets = _dets([(10, 50, 50), (100, 50, 50), (200, 50, 50)])
    all_frames = np.arange(300) / 30.0
    assert (track(dets, TrackerConfig(min_hits=3), all_frames).face_id == -1).all()


def test_gap_longer_than_max_gap_starts_a_new_face() -> None:
    """A face unseen for longer than ``max_gap_s`` ends, unless it comes back where it was
    lost within ``rejoin_gap_s`` (then it is the same face)."""
    rows = [(f, 50, 50) for f in range(0, 10)] + [(f, 52, 50) for f in range(40, 50)]
    times = np.arange(60) / 30.0
    no_rejoin = TrackerConfig(max_gap_s=0.5, rejoin_gap_s=0.0)
    ids = track(_dets(rows), no_rejoin, times).face_id
    assert set(ids[:10]) == {1} and set(ids[10:]) == {2}  # 1 s gap > 0.5 s
    ids = track(_dets(rows), TrackerConfig(max_gap_s=2.0, rejoin_gap_s=0.0), times).face_id
    assert set(ids) == {1}


def test_a_face_back_where_it_was_lost_rejoins_its_id() -> None:
    """A person turns away for a second (a profile the detector misses) and back: one face.

    Measured on the dinner clip, where the woman in profile got a new id after gaps of
    1.2 s. Back elsewhere, or after longer than ``rejoin_gap_s``, it is a new face; a
    one-off box where a face was lost (fewer than ``min_hits`` frames) never joins it.
    """
    times = np.arange(200) / 30.0
    lost = [(f, 50, 50) for f in range(10)]  # last seen at frame 9, 0.3 s
    back = [(f, 55, 48) for f in range(45, 60)]  # 1.2 s later, overlapping it by 0.7
    ids = track(_dets(lost + back), TrackerConfig(), times).face_id
    assert set(ids) == {1}
    elsewhere = [(f, 75, 50) for f in range(45, 60)]  # overlapping it by 0.23
    assert set(track(_dets(lost + elsewhere), TrackerConfig(), times).face_id) == {1, 2}
    too_late = [(f, 55, 48) for f in range(80, 95)]  # 2.3 s later
    assert set(track(_dets(lost + too_late), TrackerConfig(), times).face_id) == {1, 2}
    blip = [(45, 55, 48), (46, 55, 48)]  # two frames: never a face
    ids = track(_dets(lost + blip + [(f, 50, 50) for f in range(60, 70)]), TrackerConfig(), times)
    assert list(ids.face_id) == [1] * 10 + [-1, -1] + [1] * 10
    # after a shot cut the same place shows someone else: no rejoin across it
    ids = track(_dets(lost + back), TrackerConfig(), times, shot_starts=times[[30]]).face_id
    assert set(ids) == {1, 2}


def test_two_crossing_faces_keep_their_ids() -> None:
    rows = []
    for f in range(30):
        rows += [(f, 10 + 4 * f, 100), (f, 130 - 4 * f, 120)]  # boxes overlap as they pass
    dets = _dets(rows)
    ids = track(dets, TrackerConfig(), np.arange(30) / 30.0).face_id
    left_start = ids[(dets.frame == 0) & (dets.xywh[:, 0] == 10)][0]
    at_end = ids[(dets.frame == 29) & (dets.xywh[:, 0] == 10 + 4 * 29)][0]
    assert left_start == at_end and set(ids) == {1, 2}


def test_a_followed_box_that_drifted_is_reacquired_not_a_new_face() -> None:
    """Followed boxes drift while the head moves; the next detection overlaps the drifted box
    by 0.2 (below the 0.3 threshold). Measured on the dinner clip (a girl bending to eat) and
    a meeting clip, where the face got a second id."""
    rows = [(f, 50, 50 - f) for f in range(10)] + [(f, 50, 58 + f) for f in range(10, 20)]
    dets = _dets(rows)  # frame 9 at y=41, frame 10 at y=68: IoU of the 40 px boxes is 0.2
    ids = track(dets, TrackerConfig(), np.arange(20) / 30.0).face_id
    assert set(ids) == {1}
    strict = track(dets, TrackerConfig(reacquire_iou=0.3), np.arange(20) / 30.0).face_id
    assert set(strict) == {1, 2}
    # a weakly overlapping box of another size is another face: a blurred face behind, then
    # the performer in front (Hamilton clip, --detect-every 1: 57x92 then 125x210, IoU 0.13)
    behind = [(f, 100, 100, 57, 92) for f in range(10)]
    front = [(f, 60, 60, 125, 210) for f in range(10, 20)]
    ids = track(_dets(behind + front), TrackerConfig(), np.arange(20) / 30.0).face_id
    assert set(ids) == {1, 2}
    # a face that its own box continued is not given a second, weakly overlapping box as well
    pair = _dets([(f, 50, 50) for f in range(10)] + [(f, 50, 77) for f in range(5, 10)])
    ids = track(pair, TrackerConfig(), np.arange(10) / 30.0).face_id
    assert set(ids) == {1, 2}
    assert len(set(zip(pair.frame, ids, strict=True))) == len(pair)  # one row per face and frame


# --------------------------------------------------------------------------- writes


@requires_data
def test_failed_video_close_is_an_error_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    """A disk-full error while writing the mp4 trailer must not publish a broken file."""
    import av

    from videmo.encode import VideoWriter
    from videmo.errors import OutputError
    from videmo.video import probe, read_frames

    original = VideoWriter._close

    def close_then_fail(self, failing: bool) -> None:
        original(self, failing)
        raise av.FFmpegError(28, "No space left on device")

    monkeypatch.setattr(VideoWriter, "_close", close_then_fail)
    out = tmp_path / "annotated.mp4"
    with pytest.raises(OutputError, match="No space left"), VideoWriter(out, probe(SINGLE)) as w:
        for frame in read_frames(SINGLE, stop=3):
            w.write(frame)
    assert list(tmp_path.iterdir()) == []


@requires_data
def test_a_video_that_cannot_be_renamed_into_place_fails_in_one_line(tmp_path: Path) -> None:
    """The last step of writing a video, the rename, failed with a raw ``OSError`` and left the
    finished temp file behind. Here a folder takes the video's name while it is written."""
    from videmo.encode import VideoWriter
    from videmo.errors import OutputError
    from videmo.video import probe, read_frames

    out = tmp_path / "annotated.mp4"
    with (
        pytest.raises(OutputError, match="cannot write .*annotated.mp4"),
        VideoWriter(out, probe(SINGLE)) as writer,
    ):
        for frame in read_frames(SINGLE, stop=3):
            writer.write(frame)
        out.mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["annotated.mp4"] and out.is_dir()


def test_batch_csv_that_cannot_be_written_at_the_end_is_said_and_the_snapshot_goes(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The end of a batch could not write batch.csv (disk full): nothing was said, and the
    snapshot written while the batch ran stayed, listing finished videos as unfinished."""
    from videmo import cli
    from videmo.errors import OutputError
    from videmo.outputs import batch
    from videmo.runner import interrupted_runs

    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    out = tmp_path / "out"
    batch.write_batch_csv(interrupted_runs(paths, {}, "", "unfinished", out), out)
    assert "unfinished" in (out / "batch.csv").read_text()

    def disk_full(path: Path, text: str) -> Path:
        raise OutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(batch, "write_text_atomic", disk_full)
    assert cli._final_batch_csv(interrupted_runs(paths, {}, "why", "interrupted", out), out) is None
    assert not (out / "batch.csv").exists()
    err = capsys.readouterr().err
    assert err == (
        f"videmo: warning: batch.csv was not written: cannot write {out / 'batch.csv'}: "
        "No space left on device\n"
    )


def test_atomic_writes_fsync_before_rename(tmp_path: Path, monkeypatch) -> None:
    from videmo.outputs import atomic

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))
    )
    atomic.write_text_atomic(tmp_path / "run.json", "{}\n")
    assert events[:2] == ["fsync", "rename"]
    assert (tmp_path / "run.json").read_text() == "{}\n"


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_job_file_that_is_a_folder_or_binary(tmp_path: Path, kind: str) -> None:
    job = tmp_path / "job.toml"
    if kind == "folder":
        job.mkdir()
    else:
        job.write_bytes(bytes(range(256)) * 4)
    line = run_cli("job", job).assert_one_line_error()
    assert str(job) in line


# --------------------------------------------------------------------------- resume


@requires_data
def test_rerun_adds_outputs_an_earlier_run_skipped_and_overwrite_leaves_nothing_stale(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    folder = out / SINGLE.stem
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    assert not (folder / "annotated.mp4").exists() and not (folder / "plots").exists()
    # the same video again, now with the video and plots: they are added, not "skipped"
    again = run_cli("run", SINGLE, "-o", out, "--no-video").assert_ok()
    assert "skipped" not in again.stderr and (folder / "plots" / "overview.png").is_file()
    # a stale per-face plot and an old video do not survive an --overwrite run
    (folder / "plots" / "face_099.png").write_bytes(b"old")
    (folder / "annotated.mp4").write_bytes(b"old")
    run_cli("run", SINGLE, "-o", out, "--every", "2", "--overwrite", *FAST).assert_ok()
    assert not (folder / "plots").exists() and not (folder / "annotated.mp4").exists()
    assert not (folder / "report.html").exists() and not (folder / "faces").exists()
    assert (folder / "run.json").is_file()


@requires_data
def test_a_read_only_output_root_is_named_as_such_not_as_a_batch_csv_to_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount fails even to unlink a file that is not there (EROFS): the error
    said "cannot replace .../batch.csv" where there was none."""
    import errno

    from videmo.outputs.batch import remove_batch_summary

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OutputError, match=r"^cannot write in .*: Read-only file system$"):
        remove_batch_summary(tmp_path)


def test_overwrite_redoes_only_the_videos_whose_outputs_came_from_elsewhere(
    tmp_path: Path,
) -> None:
    """The error for one replaced input says to use --overwrite; that redid every video."""
    import pandas as pd

    folder, out = tmp_path / "in", tmp_path / "out"
    copy_clip(SINGLE, folder, "clip.mp4")
    copy_clip(CREMA_HAP, folder, "other.flv")
    run_cli("run", folder, "-o", out, *FAST).assert_ok()
    kept = (out / "other" / "run.json").stat().st_mtime_ns
    copy_clip(CREMA_HAP, folder, "clip.mp4")  # another video under the same name
    assert run_cli("run", folder, "-o", out, *FAST).rc == 1
    run_cli("run", folder, "-o", out, "--overwrite", *FAST).assert_ok()
    batch = pd.read_csv(out / "batch.csv").set_index("video")
    assert batch["status"].to_dict() == {
        str(folder / "clip.mp4"): "done",
        str(folder / "other.flv"): "skipped",
    }
    assert (out / "other" / "run.json").stat().st_mtime_ns == kept


def test_overwrite_with_a_bad_model_or_device_keeps_the_earlier_outputs(tmp_path: Path) -> None:
    """The model and device are checked before any input is touched: an --overwrite run that
    cannot start deletes nothing, and a finished video is not reported skipped instead."""
    out = tmp_path / "out"
    folder = out / SINGLE.stem
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    bad_model = run_cli("run", SINGLE, "-o", out, "--model", fake, "--overwrite", *FAST)
    assert "cannot load emotion model" in bad_model.assert_one_line_error()
    from videmo.emotion import EmotionModel

    try:  # onnxruntime-gpu lists CUDA even where it cannot run: ask the loader
        EmotionModel(device="gpu")
        gpu_works = True
    except ModelError:
        gpu_works = False
    if not gpu_works:
        no_gpu = run_cli("run", SINGLE, "-o", out, "--device", "gpu", "--overwrite", *FAST)
        assert "--device gpu" in no_gpu.assert_one_line_error()
        run_cli("run", SINGLE, "-o", out, "--device", "gpu", *FAST).assert_one_line_error()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@requires_data
def test_a_finished_folder_that_lost_an_output_is_redone(tmp_path: Path) -> None:
    """run.json lists the outputs with their sizes: a rerun redoes a folder where one is
    missing or was changed, instead of reporting it finished."""
    out = tmp_path / "out"
    folder = out / SINGLE.stem
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    original = (folder / "timeline.csv").read_bytes()
    (folder / "timeline.parquet").unlink()
    (folder / "timeline.csv").write_text("garbage")
    again = run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    assert "skipped" not in again.stderr
    assert (folder / "timeline.csv").read_bytes() == original
    assert (folder / "timeline.parquet").is_file()
    record = (folder / "run.json").read_bytes()
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()  # intact now: skipped, not redone
    assert (folder / "run.json").read_bytes() == record


# --------------------------------------------------------------------------- damaged files

PEXELS = SINGLE.parent / "pyfeat_WolfgangLanger_Pexels.mp4"  # 472 frames, 19.7 s


def _corrupt_middle(src: Path, dst: Path, share: float = 0.02) -> Path:
    data = bytearray(src.read_bytes())
    start = len(data) // 2
    noise = np.random.default_rng(0).integers(0, 256, int(len(data) * share), dtype=np.uint8)
    data[start : start + len(noise)] = noise.tobytes()
    dst.write_bytes(bytes(data))
    return dst


@requires_data
def test_strict_failure_on_a_ray_worker_names_no_folder_in_batch_csv(tmp_path: Path) -> None:
    """A damaged video failed by ``--strict`` when a Ray worker finishes it: the worker gives
    its folder back, and batch.csv named the deleted folder anyway."""
    import pandas as pd

    good = copy_clip(CREMA_HAP, tmp_path / "in")
    corrupt = _corrupt_middle(SINGLE, tmp_path / "in" / "corrupt.mp4")
    out = tmp_path / "out"
    result = run_cli("run", corrupt, good, "-o", out, "--strict", "--workers", 2, *FAST)
    assert result.rc == 1, result
    assert "did not decode" in result.stderr
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False).set_index("video")
    assert batch.loc[str(corrupt), "status"] == "failed"
    assert batch.loc[str(corrupt), "output"] == ""
    assert not (out / "corrupt").exists()
    assert batch.loc[str(good), "output"] == str(out / good.stem)


@requires_data
def test_damaged_files_are_analysed_and_marked_damaged(tmp_path: Path) -> None:
    import json

    import pandas as pd

    corrupt = _corrupt_middle(SINGLE, tmp_path / "corrupt.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(PEXELS.read_bytes()[:979_375])  # 60 %, index at the front
    cut_flv = tmp_path / "cut.flv"  # FLV counts no frames: only its duration tells
    cut_flv.write_bytes(CREMA_HAP.read_bytes()[: CREMA_HAP.stat().st_size // 2])
    # 3,000 noise bytes a third into an FLV: the demuxer logs "Packet mismatch" and drops a
    # packet, so no index holds it and no decode misses it (it was reported complete)
    mismatch = tmp_path / "mismatch.flv"
    data = bytearray(CREMA_HAP.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    data[len(data) // 3 : len(data) // 3 + 3000] = noise
    mismatch.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = run_cli("run", corrupt, truncated, cut_flv, mismatch, "-o", out, *FAST)
    assert result.rc == 0, result
    skipped = json.loads((out / "mismatch" / "run.json").read_text())["damage"]
    assert skipped["skipped_by_demuxer"]["messages"][0].startswith("Packet mismatch")
    assert skipped["skipped_by_demuxer"]["frames_missing"] >= 1
    assert "the demuxer skipped damaged data (Packet mismatch" in result.stderr
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False).set_index("output")
    for name, frames_at_least in (("corrupt", 60), ("truncated", 280), ("cut", 20)):
        report = json.loads((out / name / "run.json").read_text())
        assert report["status"] == "damaged", report
        assert report["counts"]["frames_analysed"] >= frames_at_least  # what decodes is used
        row = batch.loc[str(out / name)]
        assert row["status"] == "damaged" and row["error"].startswith("damaged: ")
    truncated_line = batch.loc[str(out / "truncated"), "error"]
    assert "readable until 12.0 s of 19.7 s" in truncated_line
    # and how much of the header's frame count that is, not only frames still in the file
    readable = json.loads((out / "truncated" / "run.json").read_text())["damage"]
    header = readable["truncated"]["frames_in_header"]
    assert header and truncated_line.endswith(
        f", {readable['frames_indexed'] - readable['frames_lost']} of {header} frames"
    )
    assert "of 1.9 s" in batch.loc[str(out / "cut"), "error"]
    corrupt_report = json.loads((out / "corrupt" / "run.json").read_text())
    assert 0 < corrupt_report["damage"]["frames_lost"] <= 12  # before: 42 of 72 lost, no output
    # the damaged outputs count as finished: a rerun skips them
    again = run_cli("run", corrupt, truncated, cut_flv, mismatch, "-o", out, *FAST).assert_ok()
    rerun = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert set(rerun["status"]) == {"skipped"}, again
    first = batch.reset_index()
    # a skipped row still says what the video holds, damage included (it was left blank)
    assert rerun["frames"].tolist() == first["frames"].tolist() and (rerun["frames"] >= 20).all()
    assert rerun["error"].tolist() == first["error"].tolist()
    assert again.stderr.count("videmo: warning:") == 4
    # --strict on a rerun fails a video an earlier run found damaged (it passed as skipped)
    strict_rerun = run_cli("run", corrupt, "-o", out, "--strict", *FAST)
    assert "(--strict; found by an earlier run)" in strict_rerun.assert_one_line_error(rc=2)
    assert json.loads((out / "corrupt" / "run.json").read_text())["status"] == "damaged"
    # --strict: a damaged video is a failure, one line, nothing that looks complete
    strict = run_cli("run", corrupt, "-o", tmp_path / "strict", "--strict", *FAST)
    line = strict.assert_one_line_error(rc=2)
    assert "did not decode" in line and line.endswith("(--strict)"), line
    # a cut file says it was cut, and how much of it is left (it said "End of file")
    cut = run_cli("run", truncated, "-o", tmp_path / "strict", "--strict", *FAST)
    assert "file cut short: readable until 12.0 s of 19.7 s" in cut.assert_one_line_error(rc=2)
    assert not list((tmp_path / "strict").rglob("run.json"))


@requires_data
def test_a_run_of_one_video_removes_a_batch_summary_that_listed_its_folder(tmp_path: Path) -> None:
    """Found by probing: after a batch, one of its videos run again alone with other settings
    left batch.csv saying the old frame and face counts."""
    import pandas as pd

    folder = tmp_path / "in"
    single, other = copy_clip(SINGLE, folder), copy_clip(DINNER, tmp_path / "elsewhere")
    copy_clip(CREMA_HAP, folder)
    out = tmp_path / "out"
    run_cli("run", folder, "-o", out, *FAST).assert_ok()
    assert len(pd.read_csv(out / "batch.csv")) == 2
    run_cli("run", single, "-o", out, *FAST).assert_ok()  # skipped: nothing changed
    run_cli("run", other, "-o", out, *FAST, "--every", "5").assert_ok()  # not in the batch
    assert (out / "batch.csv").is_file()
    again = run_cli("run", single, "-o", out, *FAST, "--every", "3", "--overwrite").assert_ok()
    assert not (out / "batch.csv").exists() and not (out / "report.html").exists()
    assert f"the batch summary in {out} (batch.csv, report.html) listed" in again.stderr  # said
    # and what --overwrite replaced (it said nothing, where a lost output is said)
    assert "made again: --overwrite replaced the outputs of other settings (every 1 -> 3)" in (
        again.stderr
    )


def _mkv_with_damaged_start(src: Path, dst: Path, frames: int, bad_packets: int) -> Path:
    """``frames`` of ``src`` as H.264 in Matroska (a keyframe every 10), the payload of the
    first ``bad_packets`` packets overwritten with seeded noise."""
    import av

    with av.open(str(src)) as clip:
        decoded = clip.decode(video=0)
        images = [next(decoded).to_ndarray(format="bgr24") for _ in range(frames)]
    with av.open(str(dst), "w", format="matroska") as out:
        stream = out.add_stream(
            "libx264", rate=25,
            options={"preset": "ultrafast", "x264-params": "keyint=10:min-keyint=10:scenecut=0"},
        )  # fmt: skip
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    with av.open(str(dst)) as written:
        packets = [bytes(p) for p in written.demux(video=0) if p.size][:bad_packets]
    data = bytearray(dst.read_bytes())
    rng = np.random.default_rng(1)
    for payload in packets:
        at = data.find(payload[:64]) + 20
        data[at : at + len(payload) - 20] = rng.integers(
            0, 256, len(payload) - 20, np.uint8
        ).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@requires_data
def test_a_file_whose_first_frames_are_damaged_is_analysed_from_the_first_that_decodes(
    tmp_path: Path,
) -> None:
    """It was refused as a whole ("video stream cannot be decoded") although most of it
    decodes; now it is analysed and marked damaged, the lost start recorded."""
    import json

    clip = _mkv_with_damaged_start(SINGLE, tmp_path / "start.mkv", frames=40, bad_packets=12)
    done = run_cli("run", clip, "-o", tmp_path / "out", *FAST).assert_ok()
    assert "damaged" in done.stderr
    report = json.loads((tmp_path / "out" / "start" / "run.json").read_text())
    assert report["status"] == "damaged"
    assert 12 <= report["damage"]["frames_lost"] <= 20  # up to the keyframe after the damage
    assert report["counts"]["frames_analysed"] == 40 - report["damage"]["frames_lost"]


@requires_data
@pytest.mark.parametrize("workers", ["0", "2"])
def test_damaged_file_gets_its_annotated_video(tmp_path: Path, workers: str) -> None:
    """The default run (annotated video on) of a file cut short is `damaged`, not failed:
    the annotated video holds every frame that decodes, in one piece or joined from the
    workers' segments. Before, re-decoding for the video failed the whole video."""
    import json

    import av

    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(PEXELS.read_bytes()[:300_000])  # 82 frames indexed, 79 decode
    out = tmp_path / "out"
    options = ("--workers", workers, "--chunk-s", "1", "--no-plots", "--no-report", "-q")
    run_cli("run", truncated, "-o", out, *options).assert_ok()
    report = json.loads((out / "truncated" / "run.json").read_text())
    assert report["status"] == "damaged" and report["damage"]["frames_lost"] == 3
    with av.open(str(out / "truncated" / "annotated.mp4")) as video:
        frames = sum(1 for _ in video.decode(video=0))
    assert frames == report["counts"]["frames_analysed"] == 79


# --------------------------------------------------------------------------- Ray


@requires_data
def test_device_gpu_without_cuda_fails_before_ray_starts(tmp_path: Path) -> None:
    """--device gpu without CUDA on a local run: one line, before Ray or any input."""

    from videmo.emotion import EmotionModel

    try:
        EmotionModel(device="gpu")
        pytest.skip("CUDA works here: --device gpu does not fail")
    except ModelError:
        pass

    before = set(ray_temp_parent().glob("videmo-ray-*"))
    result = run_cli(
        "run", SINGLE, "-o", tmp_path / "out", "--workers", "4", "--device", "gpu", *FAST
    )
    assert result.assert_one_line_error().startswith("videmo: error: --device gpu: CUDA")
    assert set(ray_temp_parent().glob("videmo-ray-*")) == before
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- one bad video


@requires_data
def test_unusable_folder_and_undecodable_name_fail_or_pass_alone(tmp_path: Path) -> None:
    """`run.json` that is a folder fails that video only; a non-UTF-8 name is analysed."""
    import pandas as pd

    clips = tmp_path / "in"
    copy_clip(SINGLE, clips, "a.mp4")
    copy_clip(SINGLE, clips, os.fsdecode(b"b\xff.mp4"))
    out = tmp_path / "out"
    (out / "a" / "run.json").mkdir(parents=True)
    # a's own folder (claimed for it): unclaimed, it would not be taken over at all
    (out / "a" / CLAIM_FILE).write_text(input_key(clips / "a.mp4") + "\n")
    result = run_cli("run", clips, "-o", out, *FAST)
    assert result.rc == 1 and "Traceback" not in result.stderr, result
    batch = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert batch["status"].tolist() == ["failed", "done"], batch
    assert "run.json" in batch["error"][0]
    assert (out / "b_" / "run.json").is_file() and "\ufffd" in batch["video"][1]


def test_plots_of_a_cjk_file_name_draw_without_glyph_warnings(tmp_path: Path) -> None:
    import warnings

    from videmo.outputs.plots import write_plots
    from videmo.pipeline import reduce_detections

    empty = reduce_detections(FaceDetections.empty(), Settings())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would raise
        written = write_plots(empty, tmp_path, "中文 clip.mp4")
        write_plots(empty, tmp_path / "tab", "a\tb\nc.mp4")  # control characters too
    assert len(written) == 2 and all(p.stat().st_size > 1000 for p in written)


@requires_data
def test_names_with_brackets_are_text_not_markup(tmp_path: Path) -> None:
    """`interview [final].mp4` is shown whole; an error holding `[/x]` does not crash Rich."""
    good = copy_clip(SINGLE, tmp_path / "in", "interview [final].mp4")
    missing = tmp_path / "in" / "bad[/x].mp4"
    result = run_cli("run", good, missing, "-o", tmp_path / "out", "--no-video", "--no-plots")
    assert result.rc == 1 and "Traceback" not in result.stderr, result
    assert "interview [final].mp4" in result.stderr and "bad[/x].mp4" in result.stderr


def test_progress_counts_every_input_and_every_source_frame(tmp_path: Path) -> None:
    """The bar reaches its end with --every 3, and 'videos k/N' never passes N."""
    from videmo.runner import Reporter, run_videos

    class Counting(Reporter):
        frames = total = videos_total = done = 0

        def start(self, total_frames: int, videos: int) -> None:
            self.total, self.videos_total = total_frames, videos

        def advance(self, frames: int) -> None:
            self.frames += frames

        def video_done(self, run) -> None:
            self.done += 1

    reporter = Counting()
    settings = Settings(every=3, video=False, plots=False, workers=0)
    runs = run_videos([SINGLE, tmp_path / "missing.mp4"], tmp_path / "out", settings, reporter)
    assert [r.status for r in runs] == ["done", "failed"]
    assert reporter.frames == reporter.total == 72
    assert reporter.done == reporter.videos_total == 2


def test_stale_ray_temp_folders_of_killed_runs_are_reaped(tmp_path: Path, monkeypatch) -> None:
    """After `kill -9` the folder stays; the next run removes it once its owner is gone."""
    import time

    from videmo import parallel

    monkeypatch.setattr(parallel, "ray_temp_parent", lambda: tmp_path)
    dead = tmp_path / "videmo-ray-999999999-abc"  # no such pid
    live = tmp_path / f"videmo-ray-{os.getpid()}-def"
    young = tmp_path / "videmo-ray-999999998-ghi"
    other = tmp_path / "videmo-ray-notapid"
    for folder in (dead, live, young, other):
        (folder / "session").mkdir(parents=True)
    old = time.time() - 3600
    for folder in (dead, live, other):
        os.utime(folder, (old, old))
    removed = parallel.reap_stale_ray_dirs()
    assert removed == [dead] and not dead.exists()
    assert live.exists() and young.exists() and other.exists()


@pytest.mark.train
def test_failed_export_leaves_the_target_untouched(tmp_path: Path, monkeypatch) -> None:
    """The parity check runs before the rename: a failed export never replaces the model."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from videmo.spec import ModelSpec
    from videmo.train import export
    from videmo.train.model import build_mini_xception

    target = tmp_path / "emotion.onnx"
    target.write_bytes(b"the model users run")

    def failing_parity(*args, **kwargs) -> float:
        raise ModelError("ONNX parity check failed: max abs diff 1 > 0.0001")

    monkeypatch.setattr(export, "parity_check", failing_parity)
    model = build_mini_xception(ModelSpec(), width=0.25)
    faces = np.zeros((4, 48, 48), np.uint8)
    with pytest.raises(ModelError, match="parity"):
        export.export_onnx(model, target, ModelSpec(), faces)
    assert target.read_bytes() == b"the model users run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emotion.onnx"]


# --------------------------------------------------------------------------- probe, session 19


def test_an_input_folder_that_is_the_output_root_is_said(tmp_path: Path) -> None:
    """`videmo run inin -o inin` said "no video files found" of a folder full of them."""
    copy_clip(SINGLE, tmp_path / "inin")
    line = run_cli("run", tmp_path / "inin", "-o", tmp_path / "inin", *FAST)
    assert "is the output root" in line.assert_one_line_error() and "another -o" in str(line)


def test_a_pipe_is_refused_by_name_not_as_an_empty_file(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    line = run_cli("run", fifo, "-o", tmp_path / "out", *FAST).assert_one_line_error()
    assert "is not a regular file (a pipe or device)" in line


def test_hidden_files_in_a_folder_are_not_inputs(tmp_path: Path) -> None:
    """macOS leaves ``._clip.mp4`` resource forks on shared drives: not videos."""
    clips = tmp_path / "clips"
    (clips / ".cache").mkdir(parents=True)
    for name in ("a.mp4", "._a.mp4", ".DS_Store", ".cache/b.mp4"):
        (clips / name).write_bytes(b"0")
    assert collect_inputs([str(clips)]) == [clips / "a.mp4"]
    # named on its own, a dot file is still taken: the user asked for it
    assert collect_inputs([str(clips / "._a.mp4")]) == [clips / "._a.mp4"]


def test_files_of_a_folder_that_are_not_videos_are_counted_and_said(tmp_path: Path) -> None:
    """An animated GIF is a video; a notes.txt is not, and the run says it left it out."""
    from collections import Counter

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.gif", "notes.txt", "c.TXT", "README"):
        (clips / name).write_bytes(b"0")
    skipped = Skipped()
    assert collect_inputs([str(clips)], skipped=skipped) == [clips / "a.mp4", clips / "b.gif"]
    assert skipped.not_videos == Counter({".txt": 2, "no extension": 1})
    result = run_cli("run", clips, "-o", tmp_path / "out", *FAST)  # -q too: never silent
    assert "3 files in the folders given are not a video by name" in result.stderr


@requires_data
def test_batch_summary_that_cannot_be_replaced_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "batch.csv").mkdir(parents=True)  # an earlier summary that cannot be removed
    line = run_cli("run", SINGLE, CREMA_HAP, "-o", out, *FAST).assert_one_line_error(rc=None)
    assert f"cannot replace {out / 'batch.csv'}" in line


@pytest.mark.parametrize("name", ["batch.csv", "report.html"])
def test_a_users_own_summary_file_at_the_output_root_is_never_replaced(
    tmp_path: Path, name: str
) -> None:
    """A batch deleted (or overwrote) a report.html or batch.csv of the user's own that was
    in the output folder: only files videmo wrote are removed."""
    out = tmp_path / "out"
    out.mkdir()
    mine = out / name
    mine.write_text("<h1>MY OWN REPORT</h1>\n" if name.endswith("html") else "my,own\n1,2\n")
    before = mine.read_bytes()
    line = run_cli("run", SINGLE, CREMA_HAP, "-o", out, *FAST).assert_one_line_error(rc=2)
    said = f"{mine} was not written by videmo, and a batch writes its summary there"
    assert line == f"videmo: error: {said}: move it, or give another -o"
    assert mine.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [name]


@requires_data
def test_a_refused_batch_keeps_the_earlier_batch_csv(tmp_path: Path) -> None:
    """The earlier batch's batch.csv was deleted first, then the batch was refused over a
    report.html of the user's: both files are checked before either is removed."""
    out = tmp_path / "out"
    run_cli("run", SINGLE, CREMA_HAP, "-o", out, *FAST).assert_ok()
    earlier = (out / "batch.csv").read_bytes()
    (out / "report.html").write_text("<html><title>my notes</title></html>\n")
    line = run_cli("run", SINGLE, CREMA_HAP, "-o", out, *FAST).assert_one_line_error(rc=2)
    assert "report.html was not written by videmo" in line
    assert (out / "batch.csv").read_bytes() == earlier


def _labeled(folder: Path, rows: str, clips: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True)
    for name in clips:
        copy_clip(CREMA_HAP, folder, name)
    (folder / "labels.csv").write_text("file,fer2013_class\n" + rows)
    return folder


def test_evaluate_clips_names_and_counts_each_folder_and_clip_once(tmp_path: Path) -> None:
    """A folder named "all" had its row overwritten by the total's; a clip listed by two
    folders' labels (one by absolute path) was scored twice."""
    from videmo.evaluation.clips import TOTAL_ROW, folder_names, labeled_clips

    a, b = _labeled(tmp_path / "all", "a.mp4,happy\n"), _labeled(tmp_path / "b", "b.mp4,sad\n")
    names = folder_names([a, b])
    assert names[1] == "b" and names[0] != TOTAL_ROW and names[0].endswith("all")
    assert folder_names([Path(".")]) == ["."]
    other = _labeled(tmp_path / "other", f"{a / 'a.mp4'},happy\n")
    (a / "a.mp4").touch()
    with pytest.raises(DataError, match=r"a\.mp4: listed by the labels of both .*all and other"):
        labeled_clips([a, other])


@requires_data
def test_labels_csv_reads_every_name_as_given_and_refuses_a_doubled_column(
    tmp_path: Path,
) -> None:
    """pandas read a clip called NA (or null, None, nan) as a missing name, and renamed a
    second fer2013_class column to fer2013_class.1 so the first was used unsaid."""
    from videmo.evaluation.clips import read_labels

    names = ("NA", "null", "None", "nan")
    folder = _labeled(tmp_path / "odd", "".join(f"{n},sad\n" for n in names), names)
    assert [(clip.file, clip.label) for clip in read_labels(folder)] == [(n, "sad") for n in names]
    doubled = tmp_path / "doubled"
    _labeled(doubled, "", ("a.mp4",))
    (doubled / "labels.csv").write_text("file,fer2013_class,fer2013_class\na.mp4,happy,sad\n")
    with pytest.raises(DataError, match="column fer2013_class appears more than once"):
        read_labels(doubled)
    # columns videmo does not read may repeat or be blank, as a spreadsheet saves them
    (doubled / "labels.csv").write_text("file,fer2013_class,notes,notes,,\na.mp4,happy,x,y,,\n")
    assert [clip.label for clip in read_labels(doubled)] == ["happy"]


@requires_data
def test_evaluate_clips_refuses_bad_labels_and_folders_in_one_line(tmp_path: Path) -> None:
    header_only = _labeled(tmp_path / "empty", "")
    assert (
        run_cli("evaluate-clips", header_only)
        .assert_one_line_error()
        .endswith("labels.csv: no clips listed")
    )
    twice = _labeled(tmp_path / "twice", "a.mp4,happy\na.mp4,sad\n", ("a.mp4",))
    line = run_cli("evaluate-clips", twice).assert_one_line_error()
    assert line.endswith("a.mp4 is listed more than once")
    no_class = _labeled(tmp_path / "noclass", "a.mp4,\n", ("a.mp4",))
    assert (
        run_cli("evaluate-clips", no_class)
        .assert_one_line_error()
        .endswith("a.mp4: no fer2013_class")
    )
    good = _labeled(tmp_path / "good", "a.mp4,happy\n", ("a.mp4",))
    line = run_cli("evaluate-clips", good, f"{good}/").assert_one_line_error()
    assert "given twice" in line
    # an image type matplotlib cannot write is refused before the evaluation, not after it
    line = run_cli("evaluate-clips", good, "--confusion-png", tmp_path / "c.txt")
    assert "the suffix must be an image type" in line.assert_one_line_error()
    # ./a.mp4 is a.mp4: scoring it twice would inflate the accuracy
    dotted = _labeled(tmp_path / "dotted", "a.mp4,happy\n./a.mp4,happy\n", ("a.mp4",))
    line = run_cli("evaluate-clips", dotted).assert_one_line_error()
    assert line.endswith("a.mp4 is listed more than once")
    absolute = _labeled(tmp_path / "abs", f"{tmp_path / 'abs' / 'a.mp4'},happy\na.mp4,sad\n",
                        ("a.mp4",))  # fmt: skip
    line = run_cli("evaluate-clips", absolute).assert_one_line_error()
    assert line.endswith("a.mp4 is listed more than once")
    extra = _labeled(tmp_path / "extra", "a.mp4,happy,loud\n", ("a.mp4",))
    line = run_cli("evaluate-clips", extra).assert_one_line_error()
    assert line.endswith("a row has more fields than the header")
    later = _labeled(tmp_path / "later", "a.mp4,happy\nb.mp4,sad,loud\n", ("a.mp4",))
    line = run_cli("evaluate-clips", later).assert_one_line_error()
    assert line.endswith("line 3 has more fields than the header")
    # an output file never replaces a clip or a labels.csv being evaluated
    for target in ("--csv", good / "labels.csv"), ("--confusion-png", good / "a.mp4"):
        before = target[1].read_bytes()
        line = run_cli("evaluate-clips", good, *target).assert_one_line_error()
        assert line.endswith("it is one of the inputs being evaluated")
        assert target[1].read_bytes() == before
    unlisted = good / "unlisted.mp4"  # nor a video the labels leave out
    unlisted.write_bytes(b"a video of mine")
    line = run_cli("evaluate-clips", good, "--csv", unlisted).assert_one_line_error()
    assert line.endswith("it is a video, not a table or an image")
    assert unlisted.read_bytes() == b"a video of mine"
    # nor another folder's labels, a model or a data file (a swapped or mistyped argument)
    other = _labeled(tmp_path / "other", "x.mp4,sad\n", ("x.mp4",))
    model, data = tmp_path / "good.onnx", tmp_path / "fer.csv.gz"
    for target, said in ((other / "labels.csv", "it is a folder's clip labels"),
                         (model, "give the per-clip table a .csv name"),
                         (data, "give the per-clip table a .csv name")):  # fmt: skip
        if not target.exists():
            target.write_bytes(b"precious")
        before = target.read_bytes()
        line = run_cli("evaluate-clips", good, "--csv", target).assert_one_line_error()
        assert said in line and target.read_bytes() == before, line


@requires_data
def test_evaluate_clips_says_which_clips_had_no_face_and_which_were_not_listed(
    tmp_path: Path,
) -> None:
    """0 % with exit 0 and nothing said was the old answer when no face could be confirmed."""
    folder = _labeled(tmp_path / "clips", "a.mp4,happy\n", ("a.mp4", "unlisted.mp4"))
    result = run_cli("evaluate-clips", "-q", folder, "--every", "1000")
    assert result.rc == 0, result
    assert "1 video(s) in" in result.stderr and "unlisted.mp4" in result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "no face was confirmed" in line]
    assert warning.endswith("a.mp4; it counts as wrong (see videmo run's --min-hits, --every "
                            "and --det-size)")  # fmt: skip


@requires_data
def test_evaluate_clips_names_unreadable_clips_and_keeps_same_named_folders_apart(
    tmp_path: Path,
) -> None:
    one = _labeled(tmp_path / "one" / "clips", "a.mp4,happy\nbroken.mp4,sad\n", ("a.mp4",))
    (one / "broken.mp4").write_bytes(b"")
    two = _labeled(tmp_path / "two" / "clips", "b.mp4,happy\n", ("b.mp4",))
    result = run_cli("evaluate-clips", "-q", one, two, "--confusion-png", tmp_path / "c.png")
    assert result.rc == 1, result
    assert "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if "broken.mp4" in line]
    assert len(warning) == 1 and "could not be read: " in warning[0] and "empty" in warning[0]
    assert "1 of 3 clips could not be read" in result.stderr
    assert "no face was confirmed" not in result.stderr
    table = result.stdout.split("\n\n")[-1]
    # two folders both named "clips": two accuracy rows, by path, not one merged row
    assert str(one) in table and str(two) in table
    assert (tmp_path / "c.png").stat().st_size > 1000


@requires_data
def test_evaluate_clips_says_a_clip_is_damaged_and_strict_leaves_it_unscored(
    tmp_path: Path,
) -> None:
    import pandas as pd

    clips = tmp_path / "clips"
    clips.mkdir()
    cut = clips / "cut.flv"
    cut.write_bytes(CREMA_HAP.read_bytes()[: CREMA_HAP.stat().st_size // 2])
    copy_clip(CREMA_HAP, clips)
    (clips / "labels.csv").write_text(
        f"file,fer2013_class\ncut.flv,happy\n{CREMA_HAP.name},happy\n"
    )
    scored = run_cli("evaluate-clips", clips, "-q", "--csv", tmp_path / "a.csv").assert_ok()
    assert "clips/cut.flv is damaged: file cut short" in scored.stderr
    table = pd.read_csv(tmp_path / "a.csv", keep_default_na=False).set_index("file")
    assert table.loc["cut.flv", "damage"].startswith("damaged: file cut short")
    assert table.loc[CREMA_HAP.name, "damage"] == "" and table.loc["cut.flv", "face_rows"] > 0
    strict = run_cli("evaluate-clips", clips, "-q", "--strict", "--csv", tmp_path / "b.csv")
    assert strict.rc == 1 and "1 of 2 clips could not be read" in strict.stderr
    table = pd.read_csv(tmp_path / "b.csv", keep_default_na=False).set_index("file")
    assert not table.loc["cut.flv", "correct"] and table.loc["cut.flv", "face_rows"] == 0


@requires_data
def test_bench_times_a_damaged_file_on_the_frames_that_decode(tmp_path: Path) -> None:
    """It printed a RuntimeError traceback (damaged FLV) or refused the file (damaged mp4)
    that `videmo run` analyses."""
    clip = _corrupt_middle(SINGLE, tmp_path / "corrupt.mp4")
    cut = tmp_path / "cut.flv"
    cut.write_bytes(CREMA_HAP.read_bytes()[: CREMA_HAP.stat().st_size // 2])
    import json

    # frames that decode, as `videmo run` analyses them: 72 packets, 2 lost; 26 of the cut
    for damaged, frames in ((clip, 70), (cut, 26)):
        out = tmp_path / f"{damaged.stem}.json"
        result = run_cli("bench", damaged, "--json", out).assert_ok()
        assert "decode" in result.stdout
        [figures] = json.loads(out.read_text())
        [run] = figures["runs"]
        assert figures["frames"] == frames
        # the run's fps counts the same frames: seconds x fps gives them back
        assert run["seconds"] * run["fps"] == pytest.approx(frames, rel=1e-6)
        # the row says what ran: serial (the default, --workers 0), not a worker count
        assert (run["executor"], run["workers_asked"]) == ("serial", 0)
        assert "serial" in result.stdout


@requires_data
def test_bench_takes_patterns_and_keeps_the_figures_of_the_good_files(tmp_path: Path) -> None:
    """A pattern was taken as a file name ("no file matches it"), and one bad file lost the
    figures of every file before it (no table, no JSON)."""
    copy_clip(SINGLE, tmp_path / "in", "a.mp4")
    (tmp_path / "in" / "zero.mp4").write_bytes(b"")
    result = run_cli("bench", tmp_path / "in" / "*.mp4", "--json", tmp_path / "b.json")
    assert result.rc == 1 and "zero.mp4" in result.stderr and "a.mp4" in result.stdout
    import json

    assert [Path(f["video"]).name for f in json.loads((tmp_path / "b.json").read_text())] == [
        "a.mp4"
    ]
    # nothing measurable at all: the error, no empty table, and run's exit status for it
    alone = run_cli("bench", tmp_path / "in" / "zero.mp4", "--json", tmp_path / "c.json")
    assert alone.rc == 2 and alone.stdout == "" and "zero.mp4" in alone.stderr
    assert not (tmp_path / "c.json").exists()


@requires_data
def test_bench_never_writes_its_json_over_a_video_or_a_model(tmp_path: Path) -> None:
    """`bench --json` replaced whatever it was given, the video being measured included;
    `evaluate --json` and `evaluate-clips --csv` already refused a name of another kind."""
    clip = copy_clip(SINGLE, tmp_path, "a.mp4")
    before = clip.read_bytes()
    line = run_cli("bench", clip, "--json", clip).assert_one_line_error()
    assert "does not end in .json" in line and clip.read_bytes() == before
    line = run_cli("bench", clip, "--workers", "-1").assert_one_line_error()
    assert "--workers" in line and "-1" in line  # a usage error before any measurement


@requires_data
def test_bench_and_evaluate_clips_write_their_files_when_stdout_closes_early(
    tmp_path: Path,
) -> None:
    """Both printed their tables first and wrote --json/--csv/--confusion-png after: with
    stdout piped into `head -1` they ended on the broken pipe and wrote nothing."""
    import subprocess

    folder = tmp_path / "clips"
    copy_clip(CREMA_HAP, folder, CREMA_HAP.name)
    (folder / "labels.csv").write_text(f"file,fer2013_class\n{CREMA_HAP.name},happy\n")
    outputs = {
        "bench": (["bench", SINGLE, "--json", tmp_path / "b.json"], [tmp_path / "b.json"]),
        "evaluate-clips": (
            ["evaluate-clips", folder, "-q", "--csv", tmp_path / "c.csv",
             "--confusion-png", tmp_path / "c.png"],
            [tmp_path / "c.csv", tmp_path / "c.png"],
        ),
    }  # fmt: skip
    for command, (args, files) in outputs.items():
        proc = subprocess.Popen(videmo_cmd(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=cli_env())  # fmt: skip
        proc.stdout.close()  # the reader is gone before the first line
        proc.wait(timeout=300)
        assert all(f.is_file() and f.stat().st_size > 0 for f in files), command
    assert json.loads((tmp_path / "b.json").read_text())[0]["frames"] > 0
    assert "happy" in (tmp_path / "c.csv").read_text()


@requires_data
def test_json_targets_are_checked_before_the_work(tmp_path: Path) -> None:
    missing = tmp_path / "nodir" / "x.json"
    line = run_cli("bench", SINGLE, "--json", missing).assert_one_line_error()
    assert line.endswith(f"{missing.parent} does not exist")
    line = run_cli("bench", SINGLE, "--json", tmp_path).assert_one_line_error()
    assert line.endswith("it is a folder")
    line = run_cli("evaluate", "--data", tmp_path / "none.csv", "--json", missing)
    assert line.assert_one_line_error().endswith(f"{missing.parent} does not exist")


@requires_data
def test_rerun_with_the_same_model_spelled_differently_skips(tmp_path: Path) -> None:
    """The model counts by its file's hash: its shipped name, an absolute path and ./name
    are one analysis. A real change of settings is refused, naming what changed."""
    import shutil

    from videmo.models import EMOTION_FILE, model_path

    own = tmp_path / "mine.onnx"
    shutil.copy(model_path(EMOTION_FILE), own)
    out = tmp_path / "out"
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    for spelled in (own, "./mine.onnx"):
        again = run_cli("run", SINGLE, "-o", out, "--model", spelled, *FAST[:-1], cwd=tmp_path)
        assert "skipped" in again.assert_ok().stderr
    line = run_cli("run", SINGLE, "-o", out, "--every", "2", *FAST).assert_one_line_error()
    assert "holds the outputs of other settings (every 1 -> 2)" in line
    assert "--overwrite" in line
    # an earlier release's folder is refused naming it, not skipped as this very run
    record = out / SINGLE.stem / "run.json"
    data = json.loads(record.read_text())
    for version, said in (("0.1.0", "the outputs of videmo 0.1.0"),
                          (None, "the outputs of another videmo release")):  # fmt: skip
        data["fingerprint"]["videmo"] = version
        record.write_text(json.dumps(data))
        line = run_cli("run", SINGLE, "-o", out, *FAST).assert_one_line_error()
        assert said in line, line


@requires_data
def test_a_folder_named_by_the_api_is_never_taken_by_a_later_batch(tmp_path: Path) -> None:
    """analyze(out_dir=root/custom) owns that folder; `videmo run x/custom.mp4 -o root`
    gets custom-<hash> instead of failing on, or claiming, another input's results."""
    import videmo
    from videmo.naming import CLAIM_FILE

    root = tmp_path / "root"
    videmo.analyze(SINGLE, out_dir=root / "custom", video=False, plots=False, report=False)
    assert (root / "custom" / CLAIM_FILE).read_text().strip() == str(SINGLE)
    other = copy_clip(CREMA_HAP, tmp_path / "x", "custom.flv")
    done = run_cli("run", other, "-o", root, *FAST).assert_ok()
    [folder] = [Path(line) for line in done.stdout.split()]
    assert folder.parent == root and folder.name.startswith("custom-")
    assert (root / "custom" / CLAIM_FILE).read_text().strip() == str(SINGLE)
    # an unclaimed folder holding a run (written before owners were recorded) is left alone
    (root / "custom" / CLAIM_FILE).unlink()
    again = run_cli("run", other, "-o", root, *FAST).assert_ok()
    assert [Path(line) for line in again.stdout.split()] == [folder]
    assert not (root / "custom" / CLAIM_FILE).exists()


@requires_data
def test_a_users_own_files_in_the_output_folder_survive_a_run(tmp_path: Path) -> None:
    """Only what videmo writes is cleared: a user's plots/my.png or draft.tmp.docx in the
    folder given as out_dir stay, while a stale face chart and a killed run's temps go."""
    import videmo

    out = tmp_path / "project"
    mine = ["plots/my.png", "faces/me.jpg", "draft.tmp.docx", ".env.tmp.bak", "notes.txt"]
    stale = ["plots/face_099.png", "faces/face_099.jpg", ".timeline.123.4.tmp.parquet",
             "plots/.face_001.7.8.tmp.png", ".annotated.0.tmp.mp4",
             ".run.json.5.6.tmp",
             "..annotated.0.tmp.24923.6.tmp.mp4"]  # a segment killed while written  # fmt: skip
    for name in mine + stale:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    videmo.analyze(SINGLE, out_dir=out, video=False, workers=0)
    for name in mine:
        assert (out / name).read_text() == name, name
    for name in stale:
        assert not (out / name).exists(), name
    assert (out / "plots" / "overview.png").is_file() and (out / "faces" / "face_001.jpg").is_file()
    # a folder whose run.json is missing (the run failed or was killed) is not read as a result
    assert len(videmo.read_timeline(out)) > 0
    (out / "run.json").unlink()
    with pytest.raises(OutputError, match="holds no finished run"):
        videmo.read_timeline(out)
    assert len(videmo.read_timeline(out / "timeline.parquet")) > 0  # a file named is read


@requires_data
def test_damaged_audio_does_not_fail_the_annotated_video(tmp_path: Path) -> None:
    """4,000 seeded random bytes in the middle of an mp4 hit one video frame and the audio:
    the muxer refused the repeated audio timestamps and failed the whole video. Now the
    damaged audio packets are dropped and the run is recorded as damaged."""
    import json
    import random

    import av

    clip = copy_clip(SINGLE, tmp_path, "mid.mp4")
    rng = random.Random(8)
    with open(clip, "r+b") as fh:
        fh.seek(clip.stat().st_size // 2)
        fh.write(bytes(rng.getrandbits(8) for _ in range(4000)))
    done = run_cli("run", clip, "-o", tmp_path / "out", "--workers", "0", "--no-plots", "-q")
    assert "damaged" in done.assert_ok().stderr
    folder = tmp_path / "out" / "mid"
    assert json.loads((folder / "run.json").read_text())["status"] == "damaged"
    with av.open(str(folder / "annotated.mp4")) as video:
        assert video.streams.video[0].frames == 71 and video.streams.audio[0].frames > 80


@requires_data
def test_read_faces_gives_the_faces_table_with_its_dtypes(tmp_path: Path) -> None:
    import pandas as pd

    import videmo

    result = videmo.analyze(SINGLE, out_dir=tmp_path / "out", video=False, plots=False)
    faces = videmo.read_faces(tmp_path / "out")
    assert faces["dominant_emotion"].dtype == result.faces["dominant_emotion"].dtype
    assert faces["mean_happy"].dtype == np.float32 and faces["face_id"].dtype == np.int64
    pd.testing.assert_frame_equal(faces, result.faces, check_exact=False, atol=1e-6)
    with pytest.raises(OutputError, match="not a videmo faces table"):
        videmo.read_faces(tmp_path / "out" / "timeline.csv")


def test_api_errors_are_one_line_and_exported() -> None:
    import videmo

    with pytest.raises(videmo.SettingsError, match="settings must be a videmo.Settings, not int"):
        videmo.analyze(SINGLE, settings=5)
    with pytest.raises(videmo.VidemoError, match="the video path is empty"):
        videmo.analyze("")
    assert videmo.SettingsError is SettingsError and videmo.Settings is Settings


def test_api_raises_the_kind_of_error_and_warns_of_damage(tmp_path: Path) -> None:
    """``except videmo.VideoError`` catches an unreadable file (analyze() used to raise every
    failure as a plain VidemoError), and a file cut short is not returned as if it were whole."""
    import videmo

    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video\n" * 50)
    with pytest.raises(videmo.VideoError, match="not a readable video"):
        videmo.analyze(notes)
    assert videmo.ModelError is ModelError and videmo.DataError is DataError
    cut = tmp_path / "cut.flv"
    cut.write_bytes(CREMA_HAP.read_bytes()[: CREMA_HAP.stat().st_size // 2])
    with pytest.warns(videmo.DamagedVideoWarning, match=r"cut\.flv: .*file cut short"):
        result = videmo.analyze(cut)
    assert result.damaged and result.damage["truncated"] and len(result.timeline)
    with pytest.raises(videmo.VideoError, match=r"file cut short.*\(--strict\)"):
        videmo.analyze(cut, strict=True)
    assert videmo.analyze(SINGLE, every=10).damage is None
    with pytest.raises(
        videmo.OutputError, match=r"out_dir .*notes\.mp4 exists and is not a folder"
    ):
        videmo.analyze(SINGLE, out_dir=notes)


def test_an_unexpected_fault_names_its_video() -> None:
    """A batch row once read ``failed: ArgumentError: ... avcodec_open2("aac") ...`` with no
    video named on stderr; a user error keeps its own text and kind."""
    from videmo.errors import VideoError
    from videmo.runner import VideoRun, _fail

    run = VideoRun(0, Path("clips/a.avi"), None)
    _fail(run, RuntimeError("Invalid argument"))
    assert run.error == "clips/a.avi: RuntimeError: Invalid argument"
    assert run.error_type is VidemoError and run.status == "failed"
    run = VideoRun(1, Path("clips/b.mp4"), None)
    _fail(run, VideoError("clips/b.mp4: not a readable video"))
    assert (run.error, run.error_type) == ("clips/b.mp4: not a readable video", VideoError)


def test_a_failed_videos_remaining_chunks_are_not_handed_out() -> None:
    """A chunk that timed out failed its video, and every later chunk of it still ran, timed
    out and cost a worker (a 24-chunk video: 26-31 s instead of 11 s)."""
    from videmo.runner import VideoRun, _chunk_tasks

    run = VideoRun(0, Path("long.mp4"), None)
    run.chunks = [(0, 10), (10, 20), (20, 30)]
    chunks = _chunk_tasks(run, complete=lambda _run: None)
    assert next(chunks).start == 0
    run.status = "failed"
    assert list(chunks) == []


def test_api_options_are_checked_like_job_file_keys() -> None:
    import videmo

    with pytest.raises(SettingsError, match=r"analyze\(\): key 'every' must be int, not str"):
        videmo.analyze(SINGLE, every="2")
    with pytest.raises(SettingsError, match=r"unknown key 'evry' \(did you mean 'every'\?\)"):
        videmo.analyze(SINGLE, evry=2)
    # numpy numbers and paths are what a Python caller has at hand: taken as plain values
    settings = Settings().with_options({"every": np.int64(2), "model": Path("m.onnx")})
    assert (settings.every, settings.model) == (2, "m.onnx") and type(settings.every) is int


@requires_data
def test_an_empty_output_root_is_refused_not_read_as_the_current_folder(tmp_path: Path) -> None:
    """`-o ''` (an unset shell variable) wrote into whatever folder videmo was started in."""
    for command in (["run", SINGLE], ["job", REPO / "jobs" / "example.toml"]):
        line = run_cli(*command, "-o", "", cwd=tmp_path).assert_one_line_error()
        assert "the output root is empty" in line
    # an empty input is not "this folder, searched whole" either
    copy_clip(SINGLE, tmp_path / "here", "a.mp4")
    line = run_cli("run", "", "-o", tmp_path / "out", cwd=tmp_path / "here")
    assert "an input is empty" in line.assert_one_line_error()
    import videmo

    with pytest.raises(OutputError, match="out_dir is empty"):
        videmo.analyze(SINGLE, out_dir="")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_analyze_that_fails_leaves_no_folders_it_made(tmp_path: Path) -> None:
    """``analyze(text_file, out_dir="new/a/b")`` raised as it should but left ``new/a/b``
    behind, empty; ``videmo run ... -o new/a/b`` removes what it made for nothing."""
    import videmo

    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    with pytest.raises(videmo.VideoError, match="not a readable video"):
        videmo.analyze(fake, out_dir=tmp_path / "new" / "a" / "b")
    (tmp_path / "kept").mkdir()
    with pytest.raises(videmo.VideoError):
        videmo.analyze(fake, out_dir=tmp_path / "kept" / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "notes.mp4"]
    assert not list((tmp_path / "kept").iterdir())  # there before: left as it was


@requires_data
def test_a_batch_report_that_cannot_be_written_is_said_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while writing the batch's report.html was silent: exit 0, no page, no
    word. The videos' outputs and batch.csv stand; stderr now says what is missing."""
    from click.testing import CliRunner

    import videmo.outputs.report as report
    from videmo.cli import cli

    def disk_full(entries: list[dict], root: Path) -> Path:
        raise OutputError(f"cannot write {root / 'report.html'}: No space left on device")

    monkeypatch.setattr(report, "write_batch_report", disk_full)
    copy_clip(CREMA_HAP, tmp_path / "in", "a.flv")
    copy_clip(CREMA_HAP, tmp_path / "in", "b.flv")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), "--workers", "0", "-q", "--no-video"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "the batch's report.html was not written" in result.stderr
    assert "No space left on device" in result.stderr
    assert (out / "batch.csv").is_file() and not (out / "report.html").exists()
    assert all((out / name / "report.html").is_file() for name in ("a", "b"))


@requires_data
def test_results_print_even_when_a_file_fails_after_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are written before the table (for a stdout closed early); a file that then
    fails (a disk full since the up-front check) must not take the table with it."""
    from click.testing import CliRunner

    import videmo.outputs.atomic as atomic
    from videmo.cli import cli

    real_write = atomic.write_text_atomic

    def disk_full(path: Path, text: str) -> Path:  # full for the two result files only
        if Path(path).name not in ("c.csv", "b.json"):
            return real_write(path, text)
        raise OutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(atomic, "write_text_atomic", disk_full)
    folder = tmp_path / "clips"
    copy_clip(CREMA_HAP, folder, CREMA_HAP.name)
    (folder / "labels.csv").write_text(f"file,fer2013_class\n{CREMA_HAP.name},happy\n")
    runs = {
        "evaluate-clips": ["evaluate-clips", str(folder), "-q", "--csv", str(tmp_path / "c.csv")],
        "bench": ["bench", str(SINGLE), "--json", str(tmp_path / "b.json")],
    }
    for command, args in runs.items():
        result = CliRunner().invoke(cli, args)
        assert isinstance(result.exception, OutputError), (command, result.output)
        assert "No space left on device" in str(result.exception)
        table = result.stdout
        assert (CREMA_HAP.name in table) if command == "evaluate-clips" else ("fps" in table)
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "b.json").exists()


@requires_data
def test_a_named_out_dir_another_call_is_writing_is_refused(tmp_path: Path) -> None:
    """Two analyze() calls naming one out_dir at once (a process pool naming folders by
    stem) mixed two videos in one folder that then read as finished: out_dir was not held
    as the folders the CLI names are. Now it is, by the same lock."""
    import videmo
    from videmo.naming import lock_output_dir, unlock_output_dir

    out = tmp_path / "shared"
    out.mkdir()
    (out / "timeline.csv").write_text("being written")  # the other call's partial output
    held = lock_output_dir(out)  # as the other call holds it
    try:
        with pytest.raises(OutputError, match="is being written by another videmo run"):
            videmo.analyze(SINGLE, out_dir=out, video=False, workers=0)
        assert (out / "timeline.csv").read_text() == "being written"
        assert not (out / "run.json").exists()
    finally:
        unlock_output_dir(held)
    result = videmo.analyze(SINGLE, out_dir=out, video=False, workers=0)  # free again
    assert (out / "run.json").is_file() and len(result.timeline) > 0


@requires_data
def test_a_run_json_with_fields_of_other_types_is_redone_not_a_traceback(tmp_path: Path) -> None:
    """A hand-edited run.json with "fingerprint": "x" or "outputs": 5 (valid JSON, wrong
    shape) gave an AttributeError traceback on the rerun; invalid JSON was already redone."""
    out = tmp_path / "out"
    run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
    run_json = out / SINGLE.stem / "run.json"
    good = json.loads(run_json.read_text())
    for field, value in (("fingerprint", "x"), ("outputs", 5), ("output_bytes", []),
                         ("outputs", [1, 2])):  # fmt: skip
        run_json.write_text(json.dumps({**good, field: value}))
        done = run_cli("run", SINGLE, "-o", out, *FAST).assert_ok()
        assert done.stdout.split() == [str(out / SINGLE.stem)], (field, done)
        redone = json.loads(run_json.read_text())  # analysed again and written whole
        assert redone["status"] == "complete", field
        for key in ("fingerprint", "outputs", "output_bytes", "counts"):
            assert redone[key] == good[key], (field, key)


def test_settings_built_directly_are_type_checked_as_keywords_are() -> None:
    """videmo.Settings(every="2") was a raw TypeError, and Settings(video="no") was taken as
    true; the same values as analyze() keywords were already one-line SettingsErrors."""
    for bad in ({"every": "2"}, {"every": 2.5}, {"video": "no"}, {"model": 3},
                {"smooth_s": None}, {"workers": 1.5}):  # fmt: skip
        with pytest.raises(SettingsError, match=f"key '{next(iter(bad))}' must be"):
            Settings(**bad)
    assert Settings(model=Path("m.onnx")).model == "m.onnx"  # a path is its text
    # numbers become plain ones of the field's kind: numpy's crashed analyze() writing
    # run.json, and smooth_s=1 hashed apart from the command line's 1.0 (a rerun was refused)
    built = Settings(smooth_s=1, every=np.int64(2), classify_interval_s=np.float32(0.5))
    assert (type(built.smooth_s), type(built.every), type(built.classify_interval_s)) == (
        float,
        int,
        float,
    )
    assert (
        built.analysis_fingerprint()
        == Settings(smooth_s=1.0, every=2, classify_interval_s=0.5).analysis_fingerprint()
    )
    # a misspelt name is one line with a hint, as analyze(evry=2) and a job file say it
    with pytest.raises(SettingsError, match=r"unknown key 'evry' \(did you mean 'every'\?\)"):
        Settings(evry=2)


def test_batch_csv_rewrites_take_a_bounded_share_of_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batch.csv is rewritten every 2 s while a batch runs; at 50,000 videos a rewrite took
    0.4 s, a fifth of the dispatch loop. A slow rewrite now spaces the next ones out."""
    import videmo.cli
    import videmo.outputs.batch

    clock = [100.0]
    writes: list[float] = []

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    def slow_write(runs, out_root) -> None:
        writes.append(clock[0])
        clock[0] += 0.5  # a write of a very large batch

    monkeypatch.setattr(videmo.cli, "time", FakeTime)
    monkeypatch.setattr(videmo.outputs.batch, "write_batch_csv", slow_write)
    from videmo.runner import VideoRun

    paths = [tmp_path / f"v{i}.mp4" for i in range(30)]
    snapshot = videmo.cli._BatchSnapshot(paths, tmp_path)
    finished: dict = {}
    for step in range(30):  # a video finishes every second
        finished[step] = VideoRun(step, paths[step], None, status="done")
        snapshot(finished)
        clock[0] += 1.0
    gaps = np.diff(writes)
    assert len(writes) >= 2 and (gaps >= 0.5 / snapshot.MAX_SHARE).all(), writes


def test_batch_progress_counts_videos_and_logs_plain_lines_to_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's bar was over frames known only as videos were prepared, so it sat at 100 %
    with an ETA of 0:00:00; and with stderr in a log file nothing came until the end."""
    import io

    from rich.console import Console

    import videmo.progress
    from videmo.runner import VideoRun

    terminal = Console(file=io.StringIO(), force_terminal=True, width=150)
    monkeypatch.setattr(videmo.progress, "console", terminal)
    reporter = videmo.progress.RichReporter(inputs=4)
    reporter.start(total_frames=100, videos=4)
    reporter.add_frames(5000)  # a video prepared later: the bar is not over frames
    reporter.advance(120)
    reporter.video_done(VideoRun(0, Path("a.mp4"), None, status="done"))
    [task] = reporter.progress.tasks
    assert (task.completed, task.total) == (1, 4)
    assert task.fields["frames"].startswith("120 frames, ")
    reporter.close()

    log = io.StringIO()
    monkeypatch.setattr(videmo.progress, "console", Console(file=log, force_terminal=False))
    monkeypatch.setattr(videmo.progress.RichReporter, "LOG_EVERY_S", 0.0)
    reporter = videmo.progress.RichReporter(inputs=4)
    reporter.start(total_frames=100, videos=4)
    reporter.advance(50)
    reporter.video_done(VideoRun(0, Path("a.mp4"), None, status="done"))
    lines = log.getvalue().splitlines()
    assert reporter.progress is None  # no bar redrawn into a file
    assert lines[0].startswith("videmo: 0/4 videos, 50 frames, ")
    assert lines[-1].startswith("videmo: 1/4 videos, 50 frames, ")

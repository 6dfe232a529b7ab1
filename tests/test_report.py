"""report.html: the face gallery, its thumbnails, escaping, the batch page, and a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import pandas as pd
import pytest
from conftest import (
    DINNER,
    FAST,
    HAMILTON,
    NO_FACE,
    SINGLE,
    copy_clip,
    requires_data,
    run_cli,
)

pytestmark = requires_data

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Links(HTMLParser):
    """Every src/href of a page, and the text content."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.links.append((tag, value))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def dinner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dinner clip (14 tracked faces) with every output, the report included."""
    root = tmp_path_factory.mktemp("report-dinner")
    run_cli("run", DINNER, "-o", root, "-q").assert_ok()
    return root / DINNER.stem


def test_first_seen_buttons_seek_to_the_exact_first_frame_time(dinner: Path) -> None:
    """Rounded to milliseconds, about half the buttons showed the frame before the face."""
    import re

    from videmo import read_timeline

    first = read_timeline(dinner).groupby("face_id")["time_s"].min().to_numpy()
    html = (dinner / "report.html").read_text()
    seeks = [float(t) for t in re.findall(r'class="seek" data-t="([^"]+)"', html)]
    assert sorted(seeks) == sorted(first.tolist()) and len(seeks) >= 5


def test_report_shows_every_face_with_a_thumbnail_that_shows_a_face(dinner: Path) -> None:
    from videmo.detect import DetectorConfig, create_detector

    faces = pd.read_csv(dinner / "faces.csv")
    page = _parse(dinner / "report.html")
    assert len(faces) >= 5
    html = (dinner / "report.html").read_text()
    for face_id in faces["face_id"]:
        assert f'id="face-{face_id}"' in html
        assert ("img", f"faces/face_{face_id:03d}.jpg") in page.links
        # a face's graph is shrunk to its card: a click opens it full size
        assert ("a", f"plots/face_{face_id:03d}.png") in page.links
    for _, src in page.links:  # every image, plot and the video exist beside the page
        assert (dinner / unquote(src)).is_file(), src
    assert ("video", "annotated.mp4") in page.links
    # The thumbnails are the faces: a detector finds a face in (nearly) every one.
    detector = create_detector(DetectorConfig(name="yunet", score_threshold=0.5, min_face=10))
    thumbs = sorted((dinner / "faces").glob("face_*.jpg"))
    assert len(thumbs) == len(faces)
    found = 0
    for thumb in thumbs:
        image = cv2.imread(str(thumb))
        assert image.shape == (160, 160, 3)
        boxes, _ = detector.detect(image)
        found += len(boxes) > 0
    assert found >= 0.8 * len(thumbs), f"a face in only {found} of {len(thumbs)} thumbnails"


def test_report_states_the_facts_of_run_json(dinner: Path) -> None:
    run = json.loads((dinner / "run.json").read_text())
    text = " ".join(_parse(dinner / "report.html").text)
    assert "report.html" in run["outputs"] and "faces/face_001.jpg" in run["outputs"]
    assert run["model"]["metrics"]["publictest_accuracy"] > 0.5
    accuracy = f"{run['model']['metrics']['publictest_accuracy']:.1%}"
    for fact in (run["input"], "854×480", str(run["counts"]["frames_analysed"]),
                 run["model"]["sha256"][:12], run["versions"]["videmo"], accuracy,
                 "FER2013 PublicTest"):  # fmt: skip
        assert fact in text, fact
    # every setting that changes the result is stated, not a chosen few
    from videmo.settings import ANALYSIS_KEYS

    for key in ANALYSIS_KEYS:
        assert f"{key}={run['settings'][key]}" in text, key
    # each face's label says what it is: the highest mean probability, not the most frequent
    faces = pd.read_csv(dinner / "faces.csv")
    assert text.count("mean probability over its frames (the label above is the highest") == len(
        faces
    )
    # the data behind the page is one click away, and every link reaches a file
    links = [unquote(v) for tag, v in _parse(dinner / "report.html").links if tag == "a"]
    for name in ("timeline.csv", "timeline.parquet", "faces.csv", "run.json"):
        assert name in links and (dinner / name).is_file(), name


def test_a_cut_files_duration_is_what_could_be_read(tmp_path: Path) -> None:
    """The facts gave the header's 0:19.7 for a file readable to 8.3 s."""
    from videmo.outputs.report import video_facts

    cut = {"frames_in_header": 472, "readable_until_s": 8.3, "duration_s": 19.7, "error": "x"}
    damage = {"frames_indexed": 199, "frames_lost": 0, "lost_ranges_s": [], "errors": [],
              "truncated": cut}  # fmt: skip
    facts = dict(video_facts({"video": {"duration_s": 19.7}, "damage": damage}))
    assert facts["duration"] == "0:08.3 of 0:19.7 readable"
    assert dict(video_facts({"video": {"duration_s": 19.7}}))["duration"] == "0:19.7"


def test_faces_beyond_the_plotted_ones_say_why_they_have_no_graph(tmp_path: Path) -> None:
    """Only the 24 faces seen longest get a graph; the other cards were silently bare."""
    from videmo.outputs.plots import MAX_FACE_PLOTS, PLOTS_DIR, face_plot_name
    from videmo.outputs.report import render_video_report
    from videmo.spec import EMOTIONS

    n = MAX_FACE_PLOTS + 1
    faces = pd.DataFrame(
        {"face_id": range(1, n + 1), "first_s": 0.0, "last_s": 2.0, "n_frames": range(n + 1, 1, -1),
         "dominant_emotion": "happy", **{f"mean_{e}": 1 / 7 for e in EMOTIONS}}
    )  # fmt: skip
    (tmp_path / PLOTS_DIR).mkdir()
    for face_id in range(1, n):  # the last face, seen least, has no graph
        (tmp_path / PLOTS_DIR / face_plot_name(face_id)).write_bytes(b"png")
    run = {"settings": {"plots": True}}
    html = render_video_report(run, faces, tmp_path, "clip.mp4")
    note = f"no graph: only the {MAX_FACE_PLOTS} faces seen in the most frames are plotted"
    first, last = html.split(f'id="face-{n}"')
    assert note in last and note not in first and html.count(note) == 1
    # --no-plots (a folder of the user's may still be there), or few faces: nothing to explain
    assert note not in render_video_report({"settings": {"plots": False}}, faces, tmp_path, "c")
    assert note not in render_video_report(run, faces.iloc[-2:], tmp_path, "clip.mp4")


def test_thumbnails_and_report_are_deterministic(dinner: Path, tmp_path: Path) -> None:
    """The gallery and the page are a function of the video and the timeline: made again
    from them, every thumbnail and the page are the same bytes."""
    from videmo.outputs.gallery import write_thumbnails
    from videmo.outputs.report import render_video_report
    from videmo.outputs.timeline import faces_summary, read_timeline
    from videmo.video import index_packets

    timeline = read_timeline(dinner)
    again = write_thumbnails(DINNER, index_packets(DINNER), timeline, tmp_path)
    written = sorted((dinner / "faces").glob("*.jpg"))
    assert [p.name for p in again] == [p.name for p in written]
    assert len(written) == timeline["face_id"].nunique() > 5
    assert all(a.read_bytes() == w.read_bytes() for a, w in zip(again, written, strict=True))
    run = json.loads((dinner / "run.json").read_text())
    page = render_video_report(run, faces_summary(timeline), dinner, DINNER.name)
    assert page == (dinner / "report.html").read_text()


def test_hostile_file_name_is_escaped_in_both_pages(tmp_path: Path) -> None:
    name = '<img src=x onerror=alert(1)> & "q".mp4'
    clip = copy_clip(SINGLE, tmp_path / "in", name)
    copy_clip(NO_FACE, tmp_path / "in")
    out = tmp_path / "out"
    run_cli("run", clip.parent, "-o", out, "--no-video", "-q").assert_ok()
    video_dir = next(p for p in out.iterdir() if p.is_dir() and p.name.startswith("<img"))
    for page in (video_dir / "report.html", out / "report.html"):
        html = page.read_text()
        assert "<img src=x" not in html
        assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;.mp4" in html
    # the batch page links batch.csv, and each video's page with a percent-encoded path
    # that resolves
    links = [src for tag, src in _parse(out / "report.html").links if tag == "a"]
    assert sorted((out / unquote(link)).resolve() for link in links) == sorted(
        [(out / "batch.csv").resolve()]
        + [(p / "report.html").resolve() for p in out.iterdir() if p.is_dir()]
    )


def test_a_file_name_that_is_not_utf8_is_shown_not_a_traceback(tmp_path: Path) -> None:
    """Linux names are bytes; one that is not UTF-8 reached the batch page as surrogates."""
    folder = tmp_path / "in"
    copy_clip(NO_FACE, folder, os.fsdecode(b"bad\xff\xfename.mp4"))
    copy_clip(NO_FACE, folder)
    out = tmp_path / "out"
    result = run_cli("run", folder, "-o", out, "--no-video", "-q")
    result.assert_ok()
    assert len(result.stdout.split()) == 2  # both folders listed, as for any batch
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "bad\ufffd\ufffdname.mp4" in page and "2 done" in page


def test_batch_report_lists_every_video_with_its_status(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    copy_clip(SINGLE, folder)
    copy_clip(NO_FACE, folder)
    copy_clip(SINGLE, folder / "take2")  # same name: the page must tell the two apart
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    result = run_cli("run", folder, "-o", out, "--no-video", "-q")
    assert result.rc == 1, str(result)
    text = re.sub(r"\s+", " ", " ".join(_parse(out / "report.html").text))
    batch = pd.read_csv(out / "batch.csv")
    for row in batch.itertuples():
        assert Path(row.video).name in text
    assert "broken.mp4 " in text and "failed" in text and "3 done, 1 failed" in text
    twin = next(Path(o).name for o in batch["output"].dropna() if Path(o).name != SINGLE.stem
                and Path(o).name.startswith(SINGLE.stem))  # fmt: skip
    assert f"→ {twin}" in text
    single = pd.read_csv(out / SINGLE.stem / "faces.csv")
    assert f"{single['dominant_emotion'].iloc[0]} ×1" in text


def test_batch_page_says_how_many_faces_it_does_not_show(tmp_path: Path) -> None:
    """The batch page shows 8 thumbnails a video; a 16-face video read as 8 faces."""
    from videmo.outputs.report import BATCH_THUMBS, render_batch_report

    video = tmp_path / "crowd"
    (video / "faces").mkdir(parents=True)
    for n in range(1, BATCH_THUMBS + 4):
        (video / "faces" / f"face_{n:03d}.jpg").write_bytes(b"")
    entry = {"video": "crowd.mp4", "output": str(video), "status": "skipped", "frames": 9,
             "faces": BATCH_THUMBS + 3, "error": "damaged: file cut short"}  # fmt: skip
    failed = {"video": "broken.mp4", "output": "", "status": "failed", "frames": 0,
              "faces": 0, "error": "broken.mp4: no video stream"}  # fmt: skip
    html = render_batch_report([entry, failed], tmp_path)
    # thumbnails load as they are scrolled to: a 600-video page had 749 loading at once
    assert html.count('<img loading="lazy" src=') == BATCH_THUMBS and "+3 more" in html
    assert "damaged: file cut short" in html  # a skipped video keeps its earlier damage
    # failures are listed first, not scattered among hundreds of rows
    assert html.index("<h2>Failed (1)</h2>") < html.index("<table")
    assert "<li>broken.mp4: no video stream</li>" in html  # named once


def test_no_report_writes_neither_page_nor_thumbnails_and_a_rerun_adds_them(
    tmp_path: Path,
) -> None:
    run_cli("run", SINGLE, "-o", tmp_path, *FAST).assert_ok()
    folder = tmp_path / SINGLE.stem
    assert not (folder / "report.html").exists() and not (folder / "faces").exists()
    again = run_cli("run", SINGLE, "-o", tmp_path, "--no-video", "--no-plots", "-q").assert_ok()
    assert "skipped" not in again.stderr
    assert (folder / "report.html").is_file() and (folder / "faces" / "face_001.jpg").is_file()


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def test_report_renders_in_headless_chromium(dinner: Path, tmp_path: Path) -> None:
    """No console errors, every image loads, a face button seeks the video, not blank."""
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}; "
                    "Debian: apt-get install chromium)")  # fmt: skip
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        # (a seek aborts the video's pending range request: that is not a failure)
        page.on(
            "requestfailed",
            lambda r: r.resource_type != "media" and problems.append(f"failed: {r.url}"),
        )
        page.goto((dinner / "report.html").as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
            " i.naturalWidth])"
        )
        faces = len(pd.read_csv(dinner / "faces.csv"))
        last = faces - 1
        # where the seek lands, read as it starts: the button then plays the video on
        page.evaluate(
            "document.getElementById('video').addEventListener('seeking',"
            " e => { window.seekedTo = e.target.currentTime; })"
        )
        page.click(f"button.seek >> nth={last}")
        page.wait_for_timeout(300)
        seeked, video_error = page.evaluate(
            "[window.seekedTo, document.getElementById('video').error]"
        )
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        colors = page.evaluate(
            "Array.from(document.querySelectorAll('header a')).map(a => [getComputedStyle(a)"
            ".color, getComputedStyle(document.querySelector('header')).backgroundColor])"
        )
        browser.close()
    assert problems == [] and video_error is None
    assert len(images) >= 2 * faces  # thumbnails and per-face plots at least
    assert [src for src, complete, width in images if not (complete and width > 0)] == []
    first_s = pd.read_csv(dinner / "faces.csv")["first_s"].iloc[last]  # 6 decimals
    start_s = json.loads((dinner / "run.json").read_text())["video"]["start_s"]
    assert seeked == pytest.approx(start_s + first_s, abs=1e-3)  # not a frame off
    pixels = cv2.imread(str(shot))
    assert pixels.shape[0] > 2000 and pixels.std() > 30  # a long page with pictures, not blank
    # the data links at the top are readable on the dark header (WCAG AA: 4.5:1); the
    # browser's default link blue was 1.7:1 there
    for link, background in colors:
        assert _contrast(link, background) >= 4.5, (link, background)
    assert len(colors) == 4  # timeline.csv, timeline.parquet, faces.csv, run.json


def test_batch_page_fits_a_phone_screen(tmp_path: Path) -> None:
    """The batch table scrolls inside its card: the page itself was 744 px wide at 390."""
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on PATH")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    copy_clip(SINGLE, tmp_path / "in", "a clip with a rather long name, as phones make.mp4")
    copy_clip(NO_FACE, tmp_path / "in")
    out = tmp_path / "out"
    run_cli("run", tmp_path / "in", "-o", out, "--no-video", "--no-plots", "-q").assert_ok()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 800})
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page_width, table_width = page.evaluate(
            "[document.documentElement.scrollWidth, document.querySelector('table').scrollWidth]"
        )
        browser.close()
    assert table_width > 390 >= page_width  # the table is wider, and scrolls in its card


def _contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two CSS ``rgb(r, g, b)`` colours."""

    def luminance(css: str) -> float:
        channels = [int(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_seek_targets_use_the_videos_own_clock(tmp_path: Path) -> None:
    """The Hamilton clip's first frame is at 0.852 s: time_s counts from it, the annotated
    video keeps the source's timestamps, and the report's buttons add the difference."""
    import av

    run_cli("run", HAMILTON, "-o", tmp_path, "--no-plots", "-q").assert_ok()
    folder = tmp_path / HAMILTON.stem
    start_s = json.loads((folder / "run.json").read_text())["video"]["start_s"]
    assert start_s == pytest.approx(0.852, abs=0.01)
    timeline = pd.read_csv(folder / "timeline.csv")
    times = timeline.groupby("frame")["time_s"].first()
    with av.open(str(folder / "annotated.mp4")) as container:
        shown = {
            i: float(frame.time)
            for i, frame in enumerate(container.decode(video=0))
            if i in (times.index[0], times.index[-1])
        }
    for frame, time_s in shown.items():
        assert time_s == pytest.approx(start_s + times[frame], abs=0.002)
    html = (folder / "report.html").read_text()
    assert f'data-start="{start_s:.6f}"' in html
    assert "parseFloat(video.dataset.start" in html

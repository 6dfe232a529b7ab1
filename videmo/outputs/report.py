"""``report.html``: one self-contained page per video, and one per batch.

The page is plain HTML with inline CSS and a few lines of inline script (no CDN,
no network): images and the annotated video are referenced by relative paths
beside it, so the folder can be moved, zipped or served as it is. Every file name
and text from the input is escaped; links are percent-encoded.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from videmo.damage import damage_line
from videmo.detections import SmallFaces
from videmo.naming import printable
from videmo.outputs.atomic import write_text_atomic
from videmo.outputs.batch import BATCH_REPORT_TITLE, FINISHED_STATUSES
from videmo.outputs.names import (
    ANNOTATED_MP4,
    BATCH_CSV,
    DISTRIBUTION_PNG,
    FACES_CSV,
    FACES_DIR,
    OVERVIEW_PNG,
    PLOTS_DIR,
    REPORT_HTML,
    RUN_JSON,
    TIMELINE_CSV,
    TIMELINE_PARQUET,
    face_plot_name,
    thumbnail_name,
)
from videmo.outputs.palette import EMOTION_COLORS
from videmo.outputs.plots import MAX_FACE_PLOTS
from videmo.outputs.timeline import MEAN_COLUMNS
from videmo.settings import ANALYSIS_KEYS
from videmo.spec import EMOTIONS

_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #dde2ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #f4f6f9; }
header { background: #1d2330; color: #fff; padding: 18px 28px; }
header h1 { margin: 0; font-size: 22px; word-break: break-all; }
header p { margin: 4px 0 0; color: #c5cbd6; }
header a { color: #9cc8ff; }
header a:visited { color: #c9b3ff; }
.scroll { overflow-x: auto; }
main { padding: 20px 28px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin-bottom: 18px; }
h2 { margin: 0 0 12px; font-size: 18px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
         gap: 8px 18px; margin: 0; }
.facts div { border-left: 3px solid var(--line); padding-left: 8px; }
.facts dt { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.facts dd { margin: 0; font-weight: 600; word-break: break-word; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.row img, video { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px; display: grid;
        grid-template-columns: 120px 1fr; gap: 4px 12px; background: #fbfcfd; }
.card .thumb { width: 120px; height: 120px; border-radius: 6px; object-fit: cover;
               background: #e8ebf0; }
.card h3 { margin: 0; font-size: 16px; }
.card .meta { color: var(--muted); font-size: 13px; }
.card .plot { grid-column: 1 / -1; width: 100%; }
.card img.plot { display: block; border: 1px solid var(--line); border-radius: 4px; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
        font-size: 13px; }
.bars { display: grid; grid-template-columns: 58px 1fr 38px; gap: 1px 6px; font-size: 12px;
        align-items: center; margin-top: 4px; }
.bar { height: 9px; border-radius: 3px; min-width: 1px; }
button.seek { font: inherit; font-size: 13px; padding: 1px 8px; border-radius: 10px;
              border: 1px solid #8aa0c0; background: #eef3fb; cursor: pointer; }
table.videos { border-collapse: collapse; width: 100%; }
table.videos th, table.videos td { text-align: left; padding: 6px 8px;
                                   border-bottom: 1px solid var(--line); vertical-align: middle; }
table.videos img { width: 44px; height: 44px; border-radius: 4px; object-fit: cover;
                   margin-right: 2px; }
.status-failed { color: #b3261e; font-weight: 600; }
.status-damaged { color: #9a6700; font-weight: 600; }
.muted { color: var(--muted); }
"""

#: Clicking a face's "first seen" button seeks the annotated video there.
_SCRIPT = """
document.querySelectorAll("button.seek").forEach(function (button) {
  button.addEventListener("click", function () {
    var video = document.getElementById("video");
    if (!video) { return; }
    // time_s counts from the first frame; the annotated video keeps the source's
    // timestamps, which a player shows from the first frame's own time (often not 0)
    video.currentTime = parseFloat(video.dataset.start || "0") + parseFloat(button.dataset.t);
    video.scrollIntoView({behavior: "smooth", block: "center"});
    var playing = video.play();
    if (playing) { playing.catch(function () {}); }
  });
});
"""


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute.

    A file name that is not valid UTF-8 reaches Python with surrogates, which cannot be
    written to a UTF-8 page: they are shown as U+FFFD, as ``naming.printable`` shows them.
    """
    return html.escape(printable(str(value)), quote=True)


def href(*parts: str) -> str:
    """A relative link to a file beside the page, percent-encoded and escaped."""
    return esc("/".join(quote(p, safe="") for p in parts))


def clock(seconds: float) -> str:
    """``m:ss.s`` (or ``h:mm:ss``) for a time in seconds."""
    if not math.isfinite(seconds):
        return "?"
    if seconds >= 3600:
        h, rest = divmod(int(seconds), 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d}"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


def _chip(emotion: str) -> str:
    color = EMOTION_COLORS.get(emotion, "#888888")
    style = f"background:{color}33;border:1px solid {color}"
    return f'<span class="chip" style="{style}">{esc(emotion)}</span>'


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _facts(items: Iterable[tuple[str, object]]) -> str:
    cells = "".join(
        f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items if v not in (None, "")
    )
    return f'<dl class="facts">{cells}</dl>'


#: How the model card's figures (``ModelSpec.extra["metrics"]``) are labelled, in this order.
METRIC_LABELS = {
    "publictest_accuracy": "FER2013 PublicTest",
    "ferplus_publictest_accuracy": "FER+ PublicTest (majority vote)",
    "video_path_accuracy": "faces through the video path",
    "dev_clips_correct": "labeled dev clips right",
}


def _model_facts(model: dict) -> list[tuple[str, object]]:
    facts: list[tuple[str, object]] = [
        ("emotion model", f"{Path(model.get('path', '?')).name} ({model.get('sha256', '')[:12]})")
    ]
    metrics = model.get("metrics") or {}
    known = [k for k in METRIC_LABELS if k in metrics]
    for name in known + sorted(set(metrics) - set(known)):
        value = metrics[name]
        shown = f"{value:.1%}" if isinstance(value, float) and value <= 1 else value
        facts.append((METRIC_LABELS.get(name, name.replace("_", " ")), shown))
    return facts


def video_facts(run: dict) -> list[tuple[str, object]]:
    """The facts box of a video's page, from the ``run.json`` dict."""
    video, counts = run.get("video", {}), run.get("counts", {})
    versions, settings = run.get("versions", {}), run.get("settings", {})
    damage = run.get("damage") or {}
    small = SmallFaces(**counts["small_faces"]) if counts.get("small_faces") else SmallFaces()
    analysis = ", ".join(f"{k}={settings[k]}" for k in ANALYSIS_KEYS if k in settings)
    duration = clock(float(video.get("duration_s") or 0.0))
    if damage.get("truncated"):  # the header's duration is not what could be read
        duration = f"{clock(float(damage['truncated']['readable_until_s']))} of {duration} readable"
    return [
        ("input", run.get("input")),  # the whole path: same-named inputs' pages differ here
        ("status", run.get("status", "?")),
        ("duration", duration),
        ("resolution", f"{video.get('width')}×{video.get('height')}"),
        ("frame rate", f"{video.get('fps', 0):.2f} fps" if video.get("fps") else None),
        ("frames analysed", counts.get("frames_analysed")),
        ("faces", counts.get("faces")),
        (
            f"faces under --min-face {settings.get('min_face')} px, left out",
            small.describe() if small.frames else None,
        ),
        ("damage", damage_line(damage) if damage else None),
        *_model_facts(run.get("model", {})),
        ("videmo", versions.get("videmo")),
        ("settings", analysis),
        ("execution", (run.get("execution") or {}).get("executor")),
    ]


def _bars(face: pd.Series) -> str:
    rows = []
    for emotion, column in zip(EMOTIONS, MEAN_COLUMNS, strict=True):
        p = float(face[column])
        rows.append(
            f"<span>{esc(emotion)}</span>"
            f'<div class="bar" style="width:{100 * p:.1f}%;background:{EMOTION_COLORS[emotion]}">'
            f"</div><span>{100 * p:.0f}%</span>"
        )
    return f'<div class="bars">{"".join(rows)}</div>'


def _face_card(face: pd.Series, out_dir: Path, has_video: bool, capped: bool) -> str:
    """One face's card; ``capped``: plots were made but not of every face (too many)."""
    face_id = int(face["face_id"])
    thumb = Path(FACES_DIR) / thumbnail_name(face_id)
    plot = Path(PLOTS_DIR) / face_plot_name(face_id)
    first, last = float(face["first_s"]), float(face["last_s"])
    seen = f"seen {clock(first)}–{clock(last)} · {int(face['n_frames'])} frames"
    if has_video:
        # full precision: a time rounded down to milliseconds shows the frame before
        first_html = f'<button class="seek" data-t="{first!r}">▶ first seen {clock(first)}</button>'
    else:
        first_html = f"first seen {clock(first)}"
    image = (
        f'<img class="thumb" loading="lazy" src="{href(*thumb.parts)}" alt="face #{face_id}">'
        if (out_dir / thumb).is_file()
        else '<div class="thumb"></div>'
    )
    if (out_dir / plot).is_file():
        plot_html = (  # shrunk to the card: a click opens it full size
            f'<a class="plot" href="{href(*plot.parts)}" title="full size">'
            f'<img class="plot" loading="lazy" src="{href(*plot.parts)}" '
            f'alt="emotions of face #{face_id} over '
            'time"></a>'
        )
    elif capped:
        plot_html = (
            f'<p class="meta">no graph: only the {MAX_FACE_PLOTS} faces seen in the most '
            "frames are plotted</p>"
        )
    else:
        plot_html = ""
    return (
        f'<div class="card" id="face-{face_id}">{image}<div>'
        f"<h3>Face #{face_id} {_chip(str(face['dominant_emotion']))}</h3>"
        f'<div class="meta">{esc(seen)}</div><div>{first_html}</div>'
        '<div class="meta">mean probability over its frames (the label above is the '
        "highest; the graphs show each frame's own)</div>"
        f"{_bars(face)}</div>"
        f"{plot_html}</div>"
    )


def render_video_report(run: dict, faces: pd.DataFrame, out_dir: Path, title: str) -> str:
    """The HTML of one video's page (``run`` is the ``run.json`` dict)."""
    out_dir = Path(out_dir)
    has_video = (out_dir / ANNOTATED_MP4).is_file()
    files = " · ".join(
        f'<a href="{href(name)}">{esc(name)}</a>'
        for name in (TIMELINE_CSV, TIMELINE_PARQUET, FACES_CSV, RUN_JSON)
        if name == RUN_JSON or (out_dir / name).is_file()  # run.json is written last
    )
    parts = [
        f"<header><h1>{esc(title)}</h1><p>videmo emotion report · "
        f"{len(faces)} face{'s' if len(faces) != 1 else ''} · data: {files}</p></header><main>",
        f"<section><h2>Video</h2>{_facts(video_facts(run))}</section>",
    ]
    if len(faces):
        capped = bool(run.get("settings", {}).get("plots")) and len(faces) > MAX_FACE_PLOTS
        cards = "".join(
            _face_card(face, out_dir, has_video, capped) for _, face in faces.iterrows()
        )
        parts.append(f'<section><h2>Faces</h2><div class="gallery">{cards}</div></section>')
    else:
        parts.append('<section><h2>Faces</h2><p class="muted">No faces were found.</p></section>')
    plots = [p for p in (OVERVIEW_PNG, DISTRIBUTION_PNG) if (out_dir / PLOTS_DIR / p).is_file()]
    if plots:
        images = "".join(
            f'<img src="{href(PLOTS_DIR, p)}" alt="{esc(p[:-4])} of all faces">' for p in plots
        )
        parts.append(
            f'<section><h2>Who felt what, when</h2><div class="row">{images}</div></section>'
        )
    if has_video:
        start_s = float((run.get("video") or {}).get("start_s") or 0.0)
        parts.append(
            '<section><h2>Annotated video</h2><video id="video" controls preload="metadata" '
            f'data-start="{start_s:.6f}" src="{href(ANNOTATED_MP4)}" width="960"></video>'
            "</section>"
        )
    parts.append("</main>")
    return _page(f"{title} · videmo", "".join(parts))


def write_video_report(run: dict, faces: pd.DataFrame, out_dir: Path, title: str) -> Path:
    """Write ``report.html`` into ``out_dir`` atomically; returns its path."""
    return write_text_atomic(
        Path(out_dir) / REPORT_HTML, render_video_report(run, faces, out_dir, title)
    )


def _dominant_summary(faces: pd.DataFrame) -> str:
    if not len(faces):
        return ""
    counts = faces["dominant_emotion"].astype(str).value_counts(sort=False)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], EMOTIONS.index(kv[0])))
    return "".join(f"{_chip(name)} ×{n} " for name, n in ordered)


#: Face thumbnails per video on the batch page.
BATCH_THUMBS = 8


def _batch_row(entry: dict, root: Path) -> str:
    """One video of the batch page; ``entry`` has video, output, status, frames, faces, error."""
    out = Path(entry["output"]) if entry.get("output") else None
    status = entry["status"]
    name = esc(Path(entry["video"]).name)
    faces = pd.DataFrame()
    link = name
    thumbs = ""
    if out is not None and status in FINISHED_STATUSES:
        rel = out.relative_to(root) if out.is_relative_to(root) else out
        if (out / REPORT_HTML).is_file():
            link = f'<a href="{href(*rel.parts, REPORT_HTML)}">{name}</a>'
        faces_csv = out / FACES_CSV
        if faces_csv.is_file():
            faces = pd.read_csv(faces_csv)
        every = sorted((out / FACES_DIR).glob("face_*.jpg")) if (out / FACES_DIR).is_dir() else []
        shown = every[:BATCH_THUMBS]
        thumbs = "".join(
            f'<img loading="lazy" src="{href(*rel.parts, FACES_DIR, p.name)}" alt="{esc(p.stem)}">'
            for p in shown
        )
        if len(every) > len(shown):  # the video's own page shows them all
            thumbs += f" <span class='muted'>+{len(every) - len(shown)} more</span>"
    if out is not None and out.name != Path(entry["video"]).stem:  # same-named inputs apart
        link += f" <span class='muted'>→ {esc(out.name)}</span>"
    detail = esc(entry.get("error", "")) if status in ("failed", "damaged", "skipped") else ""
    return (
        f"<tr><td title=\"{esc(entry['video'])}\">{link}<div class='muted'>{detail}</div></td>"
        f'<td class="status-{esc(status)}">{esc(status)}</td>'
        f"<td>{esc(entry.get('frames', ''))}</td><td>{esc(entry.get('faces', ''))}</td>"
        f"<td>{_dominant_summary(faces)}</td><td>{thumbs}</td></tr>"
    )


def _said(entry: dict) -> str:
    """A failed video's error, naming the video unless the error already does."""
    video, error = str(entry["video"]), str(entry.get("error", ""))
    return error if video in error else f"{video}: {error}"


def render_batch_report(entries: list[dict], root: Path) -> str:
    """The batch page: every input with its status, faces and dominant emotions."""
    root = Path(root)
    by_status = pd.Series([e["status"] for e in entries]).value_counts()
    summary = ", ".join(f"{n} {s}" for s, n in by_status.items())
    rows = "".join(_batch_row(e, root) for e in entries)
    failed = [e for e in entries if e["status"] == "failed"]
    failures = (  # first, not scattered among hundreds of rows
        f"<section><h2>Failed ({len(failed)})</h2><ul>"
        + "".join(f"<li>{esc(_said(e))}</li>" for e in failed)
        + "</ul></section>"
        if failed
        else ""
    )
    table = ""
    if (root / BATCH_CSV).is_file():  # written first: the table of every video's status
        table = f' · data: <a href="{href(BATCH_CSV)}">{BATCH_CSV}</a>'
    body = (
        f"<header><h1>videmo batch · {len(entries)} videos</h1><p>{esc(summary)}{table}</p>"
        f'</header><main>{failures}<section><div class="scroll"><table class="videos"><thead><tr>'
        "<th>video</th><th>status</th><th>frames</th><th>faces</th>"
        "<th>dominant emotions (faces)</th><th>faces seen</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div></section></main>"
    )
    return _page(BATCH_REPORT_TITLE, body)


def write_batch_report(entries: list[dict], root: Path) -> Path:
    """Write ``report.html`` at the batch's output root atomically."""
    return write_text_atomic(Path(root) / REPORT_HTML, render_batch_report(entries, root))

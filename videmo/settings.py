"""Run settings: one dataclass with defaults, validation and job-file loading.

The CLI options, the Python API and TOML job files all fill the same
``Settings``, so a default or a limit is defined exactly once, here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videmo.errors import SettingsError

if TYPE_CHECKING:
    from videmo.detect import DetectorConfig
    from videmo.track import TrackerConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Choices of ``--detector`` and ``--device``.
DETECTORS = ("yunet", "haar")
DEVICES = ("auto", "cpu", "gpu")
#: Choices of ``--classify-stage`` (where face crops are classified in a Ray run).
CLASSIFY_STAGES = ("auto", "on", "off")

#: Settings that change the timeline; the rest only change speed or which files are written.
#: (The model counts by its file's sha256, in the run's fingerprint, not by how its path
#: was spelled: ``./m.onnx`` and ``m.onnx`` are the same analysis.)
ANALYSIS_KEYS = (
    "detector", "det_size", "score_threshold", "min_face", "every", "detect_every",
    "classify_interval_s",
    "iou_threshold", "min_hits", "max_gap_s", "smooth_s",
)  # fmt: skip


def _opt(default: Any, help_text: str) -> Any:
    """A settings field whose help text is shown by ``--help`` and in the README."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Settings:
    """Everything that controls a run; the CLI builds its options from these fields."""

    detector: str = _opt("yunet", "face detector: yunet (CNN) or haar (classic cascade)")
    det_size: int = _opt(640, "longest side, in pixels, of the image the detector sees")
    score_threshold: float = _opt(0.6, "minimum detector confidence (YuNet)")
    min_face: int = _opt(20, "minimum face side in full-resolution pixels")
    every: int = _opt(1, "analyse every Nth frame")
    detect_every: int = _opt(
        10,
        "run the full-frame face detector on every Nth analysed frame and at shot cuts; "
        "between, each face is re-found near where it was (1: full detection on every frame)",
    )
    classify_interval_s: float = _opt(
        0.2,
        "classify faces at least this often, in seconds (faces the full-frame detector "
        "finds are always classified); between, raw probabilities are interpolated in "
        "time (0: every frame)",
    )
    device: str = _opt("auto", "where the emotion model runs: auto, cpu or gpu")
    batch_size: int = _opt(64, "face crops per ONNX Runtime call")
    model: str | None = _opt(None, "emotion model .onnx (default: the shipped model)")
    iou_threshold: float = _opt(0.3, "minimum box overlap to continue a face track")
    min_hits: int = _opt(
        3, "analysed frames in a row (detected, or followed between detections) before a "
        "track counts as a face",
    )  # fmt: skip
    max_gap_s: float = _opt(
        0.5, "seconds a face may be missed and keep its id (always one analysed frame)"
    )
    smooth_s: float = _opt(0.5, "time constant of the emotion smoothing, seconds (0: off)")
    video: bool = _opt(True, "write annotated.mp4 (the video with boxes and labels)")
    plots: bool = _opt(True, "write the PNG graphs in plots/")
    report: bool = _opt(True, "write report.html (facts, graphs, face gallery, video) and faces/")
    workers: int | None = _opt(
        None,
        "parallel Ray workers; 0: serial, no Ray "
        "(default: serial below 30 s of video in total, or 120 s on 2 CPUs or fewer; "
        "else one per CPU)",
    )
    chunk_s: float = _opt(10.0, "target chunk length in seconds for parallel work")
    classify_stage: str = _opt(
        "auto",
        "Ray runs: classify face crops in a separate stage fed by all workers (on), in "
        "each worker (off), or separately only when the cluster has a GPU (auto)",
    )
    chunk_timeout_s: float = _opt(
        600.0,
        "a Ray chunk that runs longer than this per --chunk-s of video it holds fails its "
        "video (a hung worker); writing a video's outputs may take this long per chunk",
    )
    address: str | None = _opt(None, "Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    overwrite: bool = _opt(
        False, "replace outputs made from other inputs or settings (finished outputs of "
        "the same input and settings are kept)",
    )  # fmt: skip
    strict: bool = _opt(
        False, "fail a damaged video (lost frames, truncated file) instead of marking it damaged"
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # a path for a text setting is its text, as in with_options
            value = getattr(self, f.name)
            if isinstance(value, os.PathLike) and "str" in str(f.type):
                object.__setattr__(self, f.name, os.fspath(value))
        self.validate()
        for f in fields(self):  # plain numbers of the field's kind: settings go to run.json
            value = getattr(self, f.name)  # (numpy's are not JSON; 1 and 1.0 hash apart)
            if isinstance(value, numbers.Number) and not isinstance(value, bool):
                plain = float(value) if "float" in str(f.type) else int(value)
                object.__setattr__(self, f.name, plain)

    def validate(self) -> None:
        """Raise a one-line ``SettingsError`` naming the first bad option."""
        for f in fields(self):  # Settings(every="2") or video="no" built directly, too
            check_type(f.name, getattr(self, f.name), f.type, "Settings")
        for f in fields(self):  # inf and nan pass every range check below: refuse them first
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"invalid {f.name} = {value!r}: must be a finite number")
        checks = [
            ("detector", self.detector in DETECTORS, f"one of {', '.join(DETECTORS)}"),
            ("device", self.device in DEVICES, f"one of {', '.join(DEVICES)}"),
            ("det_size", 32 <= self.det_size <= 8192, "between 32 and 8192"),
            ("score_threshold", 0.0 <= self.score_threshold <= 1.0, "between 0 and 1"),
            ("min_face", self.min_face >= 1, "at least 1"),
            ("every", self.every >= 1, "at least 1"),
            ("detect_every", self.detect_every >= 1, "at least 1"),
            ("classify_interval_s", self.classify_interval_s >= 0, "at least 0"),
            ("batch_size", 1 <= self.batch_size <= 4096, "between 1 and 4096"),
            ("iou_threshold", 0.0 < self.iou_threshold <= 1.0, "in (0, 1]"),
            ("min_hits", self.min_hits >= 1, "at least 1"),
            ("max_gap_s", self.max_gap_s >= 0, "at least 0"),
            ("smooth_s", self.smooth_s >= 0, "at least 0"),
            ("workers", self.workers is None or self.workers >= 0, "at least 0"),
            ("chunk_s", self.chunk_s > 0, "greater than 0"),
            ("chunk_timeout_s", self.chunk_timeout_s > 0, "greater than 0"),
            (
                "classify_stage",
                self.classify_stage in CLASSIFY_STAGES,
                f"one of {', '.join(CLASSIFY_STAGES)}",
            ),
        ]
        for key, ok, expected in checks:
            if not ok:
                value = getattr(self, key)
                raise SettingsError(f"invalid {key} = {value!r}: must be {expected}")

    @property
    def detector_config(self) -> DetectorConfig:
        from videmo.detect import DetectorConfig  # lazy: keeps `videmo --help` fast

        return DetectorConfig(
            name=self.detector,
            det_size=self.det_size,
            score_threshold=self.score_threshold,
            min_face=self.min_face,
        )

    @property
    def tracker_config(self) -> TrackerConfig:
        from videmo.track import TrackerConfig

        return TrackerConfig(self.iou_threshold, self.min_hits, self.max_gap_s)

    def analysis_fingerprint(self) -> str:
        """Hash of the settings that affect the timeline (for safe resume)."""
        data = {key: getattr(self, key) for key in ANALYSIS_KEYS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "") -> Settings:
        """Build from a dict (e.g. a job file's table), naming unknown or mistyped keys."""
        return cls().with_options(values, source)

    def with_options(self, values: dict[str, Any], source: str = "") -> Settings:
        """These settings with ``values`` changed; unknown or mistyped keys are one-line errors.

        A path given for a text setting (``model=Path(...)`` in Python) is taken as text.
        """
        known = {f.name: f for f in fields(self)}
        values = dict(values)
        for key, value in values.items():
            if key not in known:
                hint = _hint(key, source)
                raise SettingsError(f"{source or 'settings'}: unknown key {key!r}{hint}")
            if isinstance(value, os.PathLike) and "str" in str(known[key].type):
                values[key] = value = os.fspath(value)
            check_type(key, value, known[key].type, source)
        try:
            return replace(self, **values)
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}" if source else str(exc)) from None


_dataclass_init = Settings.__init__


@functools.wraps(_dataclass_init)
def _checked_init(self: Settings, *args: Any, **kwargs: Any) -> None:
    """``Settings(evry=2)``: a one-line ``SettingsError`` with a hint, as ``analyze(evry=2)``
    and a job file give, not the bare ``TypeError`` of a dataclass."""
    names = {f.name for f in fields(Settings)}
    for key in kwargs:
        if key not in names:
            raise SettingsError(f"Settings: unknown key {key!r}{_hint(key, 'Settings()')}")
    _dataclass_init(self, *args, **kwargs)


Settings.__init__ = _checked_init  # type: ignore[method-assign]


def _hint(key: str, source: str = "") -> str:
    """How to write a key that names a ``--no-...`` option, is misspelt, or is not a setting
    but the job's output or inputs (``source`` says whether a job file or the API gave it)."""
    import difflib

    names = [f.name for f in fields(Settings)]
    flag = key.removeprefix("no_")
    if key in ("o", "out", "output", "output_dir", "input", "inputs"):  # -o and the inputs
        if source.endswith("[settings]"):
            top = "output" if key.startswith("o") else "inputs"
            return f" (a job file gives {top} = ... at its top, above [settings])"
        if source == "analyze()":
            return " (analyze(path, out_dir=...) takes the video and the output folder)"
    if key != flag and flag in names:
        return f" (for --no-{flag.replace('_', '-')} write {flag} = false)"
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPES = {"str": str, "int": numbers.Integral, "float": numbers.Real, "bool": bool}


def check_type(key: str, value: Any, annotation: str, source: str = "") -> None:
    """Job files are data: a value must have the field's type (None allowed if optional).

    Shared by run settings and training jobs (``videmo.train.train.TrainConfig``).
    """
    base = str(annotation).replace(" | None", "")
    if value is None and "None" in str(annotation):
        return
    expected = _TYPES[base]
    if isinstance(value, bool) and base != "bool" or not isinstance(value, expected):
        where = source or "settings"
        raise SettingsError(f"{where}: key {key!r} must be {base}, not {type(value).__name__}")


def _utf16(data: bytes) -> bool:
    """UTF-16 text (a BOM, or ASCII with every other byte zero), as Windows tools save it."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    head = data[:64]
    return len(head) >= 4 and (not any(head[1::2]) or not any(head[0::2]))


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file with a one-line error for a missing or invalid file."""
    try:
        data = Path(path).read_bytes()
        if _utf16(data):
            raise SettingsError(f"{path}: UTF-16 text; save the job file as UTF-8")
        return tomllib.loads(data.decode("utf-8-sig"))  # a UTF-8 BOM (Notepad's) is fine
    except FileNotFoundError:
        raise SettingsError(f"job file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not a text file (expected a TOML job file)") from None
    except IsADirectoryError:
        raise SettingsError(f"{path} is a folder, not a TOML job file") from None
    except OSError as exc:
        raise SettingsError(f"cannot read job file {path}: {exc.strerror or exc}") from None

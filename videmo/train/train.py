"""Train the emotion model on FER2013 (CPU-friendly, seeded, resumable by checkpoint).

Design choices, and why:

* Inputs are normalised once with :meth:`ModelSpec.normalize` so training and
  inference share exactly one preprocessing formula.
* Augmentation (flip, shift, rotation, zoom) runs as TF ops inside the
  ``tf.data`` pipeline, *not* inside the model, so the exported ONNX graph is
  the bare classifier.
* A cosine learning-rate schedule over a fixed epoch budget reaches
  mini-Xception's accuracy in far fewer epochs than the paper's plateau
  schedule; ``schedule="plateau"`` is kept for comparison.
* The best model (by validation accuracy) is checkpointed every epoch, so a
  killed run can still be exported. Every file is written to a temporary name
  and renamed, in the order history row, ``best.h5``, ``last.h5``; ``last.h5``
  records how many epochs its weights have seen, so a run killed at any moment
  resumes from exactly the epoch its weights are at.
* A run whose folder already holds ``last.h5`` and ``history.csv`` resumes
  from the last finished epoch (same config required): hours-long CPU runs
  survive a stopped session. A run that stopped early (``patience``) is done:
  running it again changes nothing.
* ``ferplus_weight`` mixes FER+'s crowd-vote distribution into the target
  (soft labels): FER2013's single labels are noisy, and the votes say how
  ambiguous a face is.
* ``teacher_weight`` mixes a teacher model's probabilities on the *clean* face into
  the target (self-distillation when the teacher is the net being fine-tuned): the
  student learns to give, on shifted, zoomed and degraded faces, the answer the
  teacher gives on the clean one, instead of being pulled towards FER2013's noisy
  single labels, which cost the paper's checkpoint its PublicTest accuracy.
* ``video_augment`` degrades faces the way video crops differ from FER2013:
  lost resolution (small faces upscaled), contrast, brightness and noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from videmo.crop import resize_face
from videmo.errors import DataError, SettingsError
from videmo.outputs.atomic import atomic_write, orphaned_temps, write_text_atomic
from videmo.settings import DETECTORS, check_type, load_toml
from videmo.spec import EMOTIONS, INPUT_SIZES, ModelSpec
from videmo.train.data import SIDE as FER2013_SIDE  # a larger input_size scales them up
from videmo.train.data import (
    Split,
    ferplus_path_for,
    load_fer2013,
    load_ferplus,
    misaligned_message,
    require_split,
)

#: The no-face clip of the ``shared/data`` layout, where ``frame_by`` pastes training faces.
FRAME_BACKGROUND_DEFAULT = Path("../videos/no_face/pyfeat_no_face_caminandes.mp4")


def frame_background_for(fer2013_csv: str | Path) -> Path:
    """The default ``frame_background`` for a FER2013 CSV in the ``shared/data`` layout."""
    return (Path(fer2013_csv).parent / FRAME_BACKGROUND_DEFAULT).resolve()


#: HDF5 attribute of ``last.h5``: how many epochs its weights have been trained.
EPOCHS_ATTR = "videmo_epochs"
#: ``last.h5`` also records what it was trained on (``data_fingerprint``): a resume checks it.
DATA_ATTR = "videmo_data_sha256"

BEST_FILE = "best.h5"
LAST_FILE = "last.h5"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
LOCK_FILE = ".train.lock"
#: The validation split of data without PublicTest rows.
HOLDOUT_NAME = "a 10 % hold-out of Training"
#: What a run writes besides its config: a fresh run never starts over these.
RUN_FILES = (BEST_FILE, LAST_FILE, HISTORY_FILE, SUMMARY_FILE, "model.onnx")


@dataclass
class TrainConfig:
    """Everything that determines a training run (also the schema of the TOML job file)."""

    data: str = ""  # FER2013 CSV or image-folder root: required
    out: str = "runs/train"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.01
    warmup_epochs: int = 2
    schedule: str = "cosine"  # "cosine" or "plateau"
    patience: int = 20
    seed: int = 1337
    width: float = 1.0
    l2: float = 0.01
    separable_l2: float = 0.0
    dropout: float = 0.0
    limit_per_split: int | None = None
    threads: int = 2
    deterministic: bool = True
    flip_tta: bool = False  # export: average the face and its mirror image in the graph
    ferplus_weight: float = 0.0  # share of the target taken from FER+ votes (0: FER2013 only)
    ferplus: str = ""  # FER+ votes CSV (default: ../ferplus/ferplus_votes.csv.gz beside data)
    teacher: str = ""  # ONNX model whose answers on the clean faces become soft targets
    teacher_weight: float = 0.0  # share of the target taken from the teacher (after FER+)
    video_augment: bool = False  # resolution loss, contrast, brightness and noise
    resample_augment: bool = False  # scale 48 px faces up with a random kernel, not always linear
    paste_augment: bool = False  # half the batches scaled as a pasted or video face: up, then area
    input_size: int = 48  # side of the square face the model sees
    init_from: str = ""  # Keras checkpoint to fine-tune (its input must be input_size)
    freeze_batchnorm: bool = False  # fine-tuning: keep init_from's normalisation statistics
    frame_by: str = ""  # "yunet" or "haar": train on faces cut as videmo run cuts them
    frame_background: str = ""  # video the faces are pasted into (default: beside data)
    verbose: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), str(f.type), "train job")
        if self.schedule not in ("cosine", "plateau"):
            raise SettingsError(f"schedule must be 'cosine' or 'plateau', got {self.schedule!r}")
        for name in ("epochs", "batch_size", "threads", "input_size"):
            if int(getattr(self, name)) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_size not in INPUT_SIZES:  # as a stored model spec allows
            raise SettingsError(
                f"input_size must be {INPUT_SIZES.start} to {INPUT_SIZES.stop - 1} pixels, "
                f"got {self.input_size}"
            )
        for name in ("lr", "width", "l2", "separable_l2", "dropout", "min_lr_ratio",
                     "ferplus_weight", "teacher_weight"):  # fmt: skip
            if not math.isfinite(getattr(self, name)):  # nan passes every comparison below
                raise SettingsError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0 or self.width <= 0:
            raise SettingsError("lr and width must be > 0")
        if not 0 <= self.seed < 2**32:
            raise SettingsError(f"seed must be in 0 .. 2**32 - 1 (NumPy's range), got {self.seed}")
        if not 0.0 <= self.ferplus_weight <= 1.0:
            raise SettingsError(f"ferplus_weight must be in [0, 1], got {self.ferplus_weight}")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise SettingsError(f"teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if self.teacher_weight > 0 and not self.teacher:
            raise SettingsError("teacher_weight mixes in a teacher's answers: set teacher")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise SettingsError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise SettingsError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.warmup_epochs < 0 or self.patience < 1:
            raise SettingsError("warmup_epochs must be >= 0 and patience >= 1")
        if self.l2 < 0 or self.separable_l2 < 0:
            raise SettingsError("l2 and separable_l2 must be >= 0")
        if self.limit_per_split is not None and self.limit_per_split < 2:
            raise SettingsError(f"limit_per_split must be >= 2, got {self.limit_per_split}")
        if self.freeze_batchnorm and not self.init_from:
            raise SettingsError("freeze_batchnorm keeps init_from's statistics: set init_from")
        if self.frame_by not in ("", *DETECTORS):
            raise SettingsError(f"frame_by must be one of {DETECTORS} or '', not {self.frame_by!r}")
        if self.frame_background and not self.frame_by:
            raise SettingsError("frame_background is where frame_by pastes faces: set frame_by")
        for name in ("resample_augment", "paste_augment"):
            if getattr(self, name) and self.frame_by:
                raise SettingsError(f"frame_by cuts faces at input_size: {name} has no effect")
            if getattr(self, name) and self.input_size == FER2013_SIDE:
                raise SettingsError(
                    f"{name} scales {FER2013_SIDE} px faces up: it needs input_size above "
                    f"{FER2013_SIDE}"
                )
        if self.resample_augment and self.paste_augment:
            raise SettingsError("resample_augment and paste_augment both choose the scaling: "
                                "set one")  # fmt: skip

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a job file: top-level keys or a ``[train]`` table; unknown keys are errors."""
        raw = load_toml(Path(path))
        table = raw
        if isinstance(raw.get("train"), dict):
            table = raw["train"]
            outside = sorted(key for key in raw if key != "train")
            if outside:  # they would be silently ignored
                raise SettingsError(
                    f"{path}: key {outside[0]!r} is outside the [train] table: move it into "
                    "the table (or drop the table header)"
                )
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise SettingsError(
                    f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})"
                )
        values = {**table, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training and return the summary (also written to ``<out>/summary.json``)."""
    _check_inputs(config)
    train_split, val_split = _load_splits(config)  # bad data: an error before any folder
    tf, keras = _import_tf(config)
    out = _run_folder(Path(config.out))
    with _only_trainer(out):
        return _train_in(out, config, train_split, val_split, tf, keras)


def _run_folder(out: Path) -> Path:
    """``out``, created if needed; a one-line error where it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SettingsError(f"--out {out} is a file, not a folder") from None
    except OSError as exc:
        raise SettingsError(f"cannot create the run folder {out}: {exc.strerror}") from None
    return out


def _written_by_train(name: str) -> bool:
    """A file ``videmo train`` writes in its run folder (checkpoints, logs, the framed-face
    cache): the only temps it clears after a killed save."""
    return name in (*RUN_FILES, CONFIG_FILE) or (
        name.startswith("framed-") and name.endswith(".npz")
    )


@contextlib.contextmanager
def _only_trainer(out: Path) -> Iterator[None]:
    """Hold ``out/.train.lock`` while training: a second ``videmo train`` on the same
    folder (the same command run again to check on a long job) would interleave its
    epochs, checkpoints and log with the first's. Where there is no ``fcntl`` (Windows),
    nothing is locked, as for the output folders (``videmo.naming``)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise SettingsError(f"cannot write in the run folder {out}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            who = handle.read().strip() or "another process"
            raise SettingsError(
                f"{out} is being trained by another videmo train ({who}): wait for it to "
                "finish, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        for orphan in orphaned_temps(out, _written_by_train):  # a save killed (SIGKILL)
            with contextlib.suppress(OSError):
                orphan.unlink()
        yield


def _train_in(
    out: Path, config: TrainConfig, train_split: Split, val_split: Split, tf: Any, keras: Any
) -> dict[str, Any]:
    """Train in the locked run folder ``out``: resume it, or start it fresh."""
    done_epochs = _resumable_epochs(out, config)
    data_sha = data_fingerprint(train_split, val_split)
    if done_epochs:
        _refuse_other_data(out, data_sha, done_epochs)
    else:
        _check_fresh(out, config)
    previous = run_summary(out) if done_epochs else None
    if previous is not None and _stopped_early(previous, config, done_epochs):
        print(
            f"{out} is finished: early stopping ended it at epoch {done_epochs} (patience "
            f"{previous['config']['patience']}); a larger patience goes on",
            file=sys.stderr,
        )
        return previous
    if previous is not None and done_epochs >= config.epochs:  # nothing to train: leave it
        print(
            f"{out} is finished: {done_epochs} epochs trained (--epochs {config.epochs}); "
            "a larger --epochs goes on",
            file=sys.stderr,
        )
        return previous
    write_text_atomic(out / CONFIG_FILE, json.dumps(asdict(config), indent=2) + "\n")

    spec = default_spec(config)
    if config.frame_by:
        train_split = _framed_by_detector(train_split, spec, config, out)
    train_targets = training_targets(train_split, config)
    train_ds = _dataset(tf, keras, spec, train_split, train_targets, config, augment=True)
    val_ds = _dataset(tf, keras, spec, val_split, _one_hot(val_split.labels), config, False)

    if done_epochs:
        try:
            model = keras.models.load_model(str(out / LAST_FILE))
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"{out / LAST_FILE} cannot be loaded ({str(exc).splitlines()[0]}): delete the "
                "run folder or choose another --out"
            ) from None
        print(f"resuming {out} after epoch {done_epochs}", file=sys.stderr)
    else:
        model = _initial_model(keras, spec, config)
        model.compile(
            optimizer=keras.optimizers.Adam(config.lr),
            loss="categorical_crossentropy",
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    started = time.time()
    callbacks = _callbacks(keras, config, out, run_history(out) if done_epochs else None, data_sha)
    with contextlib.redirect_stdout(sys.stderr):  # Keras's epoch lines are progress, not results
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=done_epochs,
            callbacks=callbacks,
            verbose=config.verbose,
        )
    stopped = any(getattr(cb, "stopped_epoch", 0) > 0 for cb in callbacks)
    return _write_summary(
        out, config, model, run_history(out), time.time() - started, len(train_split),
        len(val_split), stopped_early=stopped, validation=val_split.name,
    )  # fmt: skip


def _check_inputs(config: TrainConfig) -> None:
    """Missing files are one-line errors before TensorFlow loads and the run folder exists."""
    if not config.data:
        raise SettingsError("no training data: give --data (FER2013 CSV) or a job file's data")
    if not Path(config.data).exists():
        hint = (
            ""
            if Path(config.data).is_absolute()
            else (
                f" (relative to {Path.cwd()}, the folder videmo runs in; the job files in "
                "jobs/ expect the repository root)"
            )
        )
        raise DataError(f"FER2013 data not found: {config.data}{hint}")
    if config.init_from and not Path(config.init_from).is_file():
        raise SettingsError(f"init_from {config.init_from} is not a file")
    if config.frame_by:
        background = _frame_background(config)
        if not background.is_file():
            raise SettingsError(
                f"frame_background {background} is not a file: set frame_background"
            )


def _initial_model(keras: Any, spec: ModelSpec, config: TrainConfig) -> Any:
    """A fresh mini-Xception, or the weights of ``init_from`` to fine-tune.

    Fine-tuning starts from a net that already carries over to video (e.g. the
    paper's mini-Xception); its architecture and regularisation are kept as saved.
    """
    if not config.init_from:
        from videmo.train.model import build_mini_xception

        return build_mini_xception(
            spec,
            width=config.width,
            l2=config.l2,
            dropout=config.dropout,
            separable_l2=config.separable_l2,
        )
    from videmo.train.export import load_keras

    model = load_keras(config.init_from)
    want = (spec.input_size, spec.input_size, spec.channels)
    if tuple(model.input_shape[1:]) != want or tuple(model.output_shape[1:]) != (len(EMOTIONS),):
        raise SettingsError(
            f"init_from {config.init_from}: input {tuple(model.input_shape[1:])} and output "
            f"{tuple(model.output_shape[1:])} must be {want} and ({len(EMOTIONS)},)"
        )
    if config.freeze_batchnorm:
        # A frozen BatchNormalization layer runs in inference mode: its statistics stay
        # those the net was trained with instead of drifting to the augmented batches.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def _write_history(out: Path, history: dict[str, list]) -> None:
    """Write the per-epoch log atomically (``epoch`` first, then the metrics by name)."""
    import pandas as pd

    from videmo.outputs.atomic import write_text_atomic

    columns = ["epoch", *sorted(k for k in history if k != "epoch")]
    write_text_atomic(out / HISTORY_FILE, pd.DataFrame(history)[columns].to_csv(index=False))


def run_history(out: Path) -> dict[str, list]:
    """The per-epoch log of a run (all epochs, across resumes)."""
    import pandas as pd

    path = out / HISTORY_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    return {k: v.tolist() for k, v in pd.read_csv(path).items()}


#: Settings a resumed run may change: output and speed, the epoch budget (extending a
#: run stretches the cosine schedule from the epoch it stands at), and where the run is
#: (a folder may be moved or spelled ``./runs/x`` instead of ``runs/x``).
_RESUME_MAY_CHANGE = ("verbose", "threads", "epochs", "patience", "out")


def _resumable_epochs(out: Path, config: TrainConfig) -> int:
    """Epochs already finished in ``out`` by a run with the same config (0: start fresh).

    A key the stored config lacks (a run from before that option existed) counts as
    its default. The count is the one ``last.h5`` records; the log is cut to it.
    """
    if not (out / LAST_FILE).is_file() or not (out / CONFIG_FILE).is_file():
        return 0
    _refuse_other_settings(out, config)
    history = run_history(out)
    done = _checkpoint_epochs(out / LAST_FILE)
    if done is None:  # written before checkpoints recorded their epoch
        return len(history.get("epoch", []))
    logged = len(history.get("epoch", []))
    if logged < done:  # each epoch's row is written before its checkpoints: the log was lost
        raise SettingsError(
            f"{out / HISTORY_FILE} has {logged} of the {done} epochs {LAST_FILE} has trained: "
            f"without them the run's best epoch is unknown and {BEST_FILE} would be replaced; "
            "put the log back, or choose another --out"
        )
    if logged > done:  # killed after the log row, before last.h5
        _write_history(out, {k: v[:done] for k, v in history.items()})
    return done


def _refuse_other_settings(out: Path, config: TrainConfig) -> None:
    """A one-line error if ``out/config.json`` is a run with other settings than ``config``.

    A key the stored config lacks (a run from before that option existed) counts as
    its default.
    """
    try:
        stored = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        raise SettingsError(
            f"{out / CONFIG_FILE} is unreadable: delete the run folder or choose another --out"
        ) from None
    defaults = asdict(TrainConfig())
    mine = asdict(config)
    changed = [
        k
        for k in mine
        if k not in _RESUME_MAY_CHANGE and not _same_setting(k, stored.get(k, defaults[k]), mine[k])
    ]
    if changed:
        raise SettingsError(
            f"{out} holds a run with other settings ({', '.join(changed)}): "
            "choose another --out or delete it"
        )


def read_run_config(path: Path) -> TrainConfig:
    """A run folder's ``config.json`` as a TrainConfig; one line when it is not one (a
    damaged file, or another file written there: ``evaluate --json run/config.json``)."""
    try:
        stored = json.loads(Path(path).read_text())
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        unknown = sorted(set(stored) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown[:3])}")
        return TrainConfig(**stored)
    except (OSError, ValueError, SettingsError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(f"{path} is not a videmo train config ({why})") from None


#: Settings that name a file: ``mid.csv``, ``./mid.csv`` and its absolute path are one.
_FILE_SETTINGS = ("data", "ferplus", "teacher", "init_from", "frame_background")


def _same_setting(name: str, stored: Any, mine: Any) -> bool:
    """Equal values, or two spellings of one existing file for a setting that names one."""
    if stored == mine:
        return True
    if name not in _FILE_SETTINGS or not stored or not mine:
        return False
    try:
        return os.path.samefile(stored, mine)
    except (OSError, TypeError, ValueError):
        return False


def _check_fresh(out: Path, config: TrainConfig) -> None:
    """Refuse to start a fresh run over files of a run that cannot be resumed.

    Without ``last.h5`` and ``config.json`` together a run starts from scratch, and
    would overwrite a ``best.h5``, log or model left there (a finished run whose
    ``last.h5`` was deleted to save space). A ``config.json`` alone (no epoch ended)
    is started over with the new settings; with the log and ``best.h5`` of a first epoch
    that was being saved, only with the same settings.
    """
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not _own_first_epoch(out, config, present):
        raise SettingsError(
            f"{out} holds {', '.join(present)} of a run that cannot be resumed (it needs "
            f"{LAST_FILE} and {CONFIG_FILE}): choose another --out or delete them"
        )
    # A config.json alone is a start that failed or was stopped before an epoch ended
    # (a missing teacher, say): nothing trained is lost, so the corrected command goes on.


def _own_first_epoch(out: Path, config: TrainConfig, present: list[str]) -> bool:
    """Whether the files are this very run's, killed while saving its first epoch: the log
    row and ``best.h5`` are written before ``last.h5``. Such a run starts over."""
    if not set(present) <= {HISTORY_FILE, BEST_FILE} or not (out / CONFIG_FILE).exists():
        return False
    _refuse_other_settings(out, config)
    return len(run_history(out).get("epoch", [])) <= 1


def data_fingerprint(train: Split, val: Split) -> str:
    """sha256 of the faces and labels a run trains and validates on, as loaded.

    Settings name the data file by its path only; a file replaced under the same name (other
    rows, another subset) would otherwise be resumed as if it were the same data.
    """
    digest = hashlib.sha256()
    for part in (train.images, train.labels, val.images, val.labels):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _refuse_other_data(out: Path, data_sha: str, done_epochs: int) -> None:
    """A one-line error if ``last.h5`` was trained on other faces than this run loads."""
    import h5py

    try:
        with h5py.File(out / LAST_FILE, "r") as fh:
            stored = fh.attrs.get(DATA_ATTR)
    except OSError:
        return  # a damaged checkpoint is said where it is loaded
    if stored is not None and str(stored) != data_sha:
        raise SettingsError(
            f"{out} was trained for {done_epochs} epochs on other data than the file given now "
            "holds (its faces or labels changed): choose another --out or delete it"
        )


def _checkpoint_epochs(path: Path) -> int | None:
    """The epoch count ``last.h5`` records; a one-line error when the file is damaged."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            value = fh.attrs.get(EPOCHS_ATTR)
    except OSError as exc:
        raise SettingsError(
            f"{path} is damaged ({str(exc).splitlines()[0]}): delete the run folder or choose "
            "another --out"
        ) from None
    return None if value is None else int(value)


def run_summary(out: Path) -> dict[str, Any] | None:
    """The ``summary.json`` an earlier invocation wrote (None: none, or unreadable)."""
    try:
        summary = json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _stopped_early(summary: dict[str, Any], config: TrainConfig, done: int) -> bool:
    """Whether early stopping ended the run at ``done`` epochs (its ``summary``).

    Such a run is finished: running it again would train on past the stop. A larger
    ``patience`` than the one it stopped with lets it go on.
    """
    stored_patience = summary.get("config", {}).get("patience", config.patience)
    return (
        bool(summary.get("stopped_early"))
        and summary.get("epochs_run") == done
        and config.patience <= stored_patience
    )


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(EMOTIONS), dtype=np.float32)[labels]


def training_targets(split: Split, config: TrainConfig) -> np.ndarray:
    """Per-row target distributions: FER2013 one-hot, mixed with FER+ vote shares, then
    with the teacher's probabilities.

    Rows without FER+ votes keep their FER2013 label alone in the first mix.
    """
    targets = _one_hot(split.labels)
    if config.ferplus_weight > 0:
        if split.rows is None:
            raise SettingsError(
                "ferplus_weight needs the FER2013 CSV (its rows key the FER+ votes)"
            )
        votes_path = config.ferplus or ferplus_path_for(config.data)
        votes = load_ferplus(votes_path)
        reason = votes.misaligned(split, "Training")
        if reason is not None:
            raise DataError(misaligned_message(votes_path, config.data, reason))
        shares, has = votes.distribution(split.rows)
        w = config.ferplus_weight
        targets[has] = (1 - w) * targets[has] + w * shares[has]
    if config.teacher_weight > 0:
        w = config.teacher_weight
        targets = (1 - w) * targets + w * teacher_probabilities(config.teacher, split, config)
    return targets


def teacher_probabilities(teacher: str, split: Split, config: TrainConfig) -> np.ndarray:
    """The teacher's probabilities on the split's clean faces, through videmo's own
    ONNX loader (so its stored preprocessing, input size and mirror average apply)."""
    from videmo.emotion import EmotionModel

    model = EmotionModel(teacher, device="cpu", threads=config.threads)
    probs = model.predict(split.images)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def default_spec(config: TrainConfig) -> ModelSpec:
    """The spec of a model trained with ``config`` (defaults: 48x48, x/255 -> [-1, 1])."""
    extra: dict[str, Any] = {"arch": "mini_xception", "width": config.width, "dataset": "FER2013"}
    if config.init_from:
        extra["init_from"] = Path(config.init_from).name
    if config.teacher_weight > 0:
        extra["teacher"] = Path(config.teacher).name
    return ModelSpec(input_size=config.input_size, extra=extra)


def _import_tf(config: TrainConfig) -> tuple[Any, Any]:
    """Import TF with thread limits and seeds set before any op runs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if config.input_size != FER2013_SIDE:
        # TF 2.21's oneDNN kernels segfault in the first training step of a mini-Xception
        # at 64x64 (48x48 trains fine); TF's plain kernels train it. The switch is read
        # when TensorFlow loads, so it cannot be turned off in a process that has loaded it.
        if "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
            raise SettingsError(
                f"input_size {config.input_size} needs TF_ENABLE_ONEDNN_OPTS=0 before "
                "TensorFlow is imported: run 'videmo train' in a fresh process"
            )
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    import tensorflow as tf
    import tf_keras as keras

    try:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    except RuntimeError:  # already initialised (e.g. in a test session): keep existing
        pass
    random.seed(config.seed)
    np.random.seed(config.seed)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return tf, keras


def _load_splits(config: TrainConfig) -> tuple[Split, Split]:
    """Training split plus PublicTest for validation (never trained on).

    Without PublicTest rows a seeded 10% of Training is held out instead.
    """
    splits = load_fer2013(config.data, config.limit_per_split, config.seed)
    train_split = require_split(splits, "Training", "training")
    val = splits.get("PublicTest")
    if val is not None and len(val) > 0:
        return train_split, dataclasses.replace(val, name="PublicTest")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_split))
    n_val = max(1, len(order) // 10)
    v, t = order[:n_val], order[n_val:]
    rows = train_split.rows  # kept: they join FER+ votes to the faces
    return (
        Split(train_split.images[t], train_split.labels[t], None if rows is None else rows[t],
              file_rows=train_split.file_rows),
        Split(train_split.images[v], train_split.labels[v], None if rows is None else rows[v],
              name=HOLDOUT_NAME, file_rows=train_split.file_rows),
    )  # fmt: skip


def _frame_background(config: TrainConfig) -> Path:
    """The video ``frame_by`` pastes training faces into."""
    return Path(config.frame_background or frame_background_for(config.data))


def _framed_by_detector(split: Split, spec: ModelSpec, config: TrainConfig, out: Path) -> Split:
    """The split's faces cut by ``frame_by`` and ``videmo.crop`` (cached in the run folder)."""
    from videmo.train.recrop import cached_detector_framed

    faces, _found = cached_detector_framed(
        split.images, spec, config.frame_by, _frame_background(config), config.seed, out
    )
    return dataclasses.replace(split, images=faces)


def _dataset(
    tf: Any,
    keras: Any,
    spec: ModelSpec,
    split: Split,
    targets: np.ndarray,
    config: TrainConfig,
    augment: bool,
) -> Any:
    rescale = config.resample_augment or config.paste_augment
    resample = augment and rescale and split.images.shape[1] != spec.input_size
    x = spec.normalize(
        np.stack([resize_face(im, spec.input_size) for im in split.images])
        if split.images.shape[1] != spec.input_size and not resample
        else split.images
    )
    ds = tf.data.Dataset.from_tensor_slices((x, targets.astype(np.float32)))
    if augment:
        ds = ds.shuffle(len(split), seed=config.seed, reshuffle_each_iteration=True)
    # Training drops the last partial batch: besides keeping batch statistics
    # even, TF 2.21 on this CPU segfaulted on a 37-row final training batch.
    ds = ds.batch(config.batch_size, drop_remainder=augment and len(split) > config.batch_size)
    if resample:
        scale = _paste_scale if config.paste_augment else _random_upscale
        ds = ds.map(lambda a, b: (scale(tf, a, spec.input_size), b))
    if augment:
        aug = _augmenter(keras, config.seed)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=1)
        if config.video_augment:
            ds = ds.map(lambda a, b: (_video_degrade(tf, a), b), num_parallel_calls=1)
    return ds.prefetch(2)


#: Kernels a 48 px face may be scaled up with. Video faces reach the model sharp (cut
#: large and shrunk), while ``crop.resize_face`` scales FER2013's 48 px faces up
#: linearly, which blurs them: a model that only ever saw the linear kind learns that blur.
UPSCALE_KERNELS = ("bilinear", "bicubic", "lanczos3")


def _random_upscale(tf: Any, x: Any, size: int) -> Any:
    """Scale a batch of normalised faces up to ``size`` with one kernel drawn per batch."""
    pick = tf.random.uniform([], 0, len(UPSCALE_KERNELS), dtype=tf.int32)
    branches = [
        lambda method=method: tf.image.resize(x, [size, size], method=method)
        for method in UPSCALE_KERNELS
    ]
    return tf.clip_by_value(tf.switch_case(pick, branches), -1.0, 1.0)


def _paste_scale(tf: Any, x: Any, size: int) -> Any:
    """Scale a batch of normalised 48 px faces to ``size``: half the batches linearly, as every
    training face, the other half as a pasted face reaches the net (up to a random side of
    80-300 px with a bicubic kernel, then down by area averaging, as ``crop.resize_face``
    shrinks a crop). Nets trained on the linear kind alone lost 2 points on pasted faces
    even when cut at the true paste square (``benchmarks/crop_oracle.py``)."""
    from videmo.evaluation.pasted import FACE_SIDES  # the path benchmark's paste sizes

    side = tf.random.uniform([], FACE_SIDES[0], FACE_SIDES[1] + 1, dtype=tf.int32)

    def pasted() -> Any:  # inside the branch: a plain batch never pays for the 300 px resize
        up = tf.image.resize(x, [side, side], method="bicubic")
        return tf.image.resize(up, [size, size], method="area")

    def plain() -> Any:
        return tf.image.resize(x, [size, size], method="bilinear")

    out = tf.cond(tf.random.uniform([]) < 0.5, pasted, plain)
    return tf.clip_by_value(out, -1.0, 1.0)


def _video_degrade(tf: Any, x: Any) -> Any:
    """Batch ops that make FER2013 faces look like face crops cut from video.

    Half the faces lose resolution (shrunk to 14-40 px and scaled back, as a
    small face in a frame is), and every face gets its own contrast,
    brightness and sensor noise. ``x`` is normalised to [-1, 1].
    """
    n = tf.shape(x)[0]
    size = tf.shape(x)[1]
    side = tf.random.uniform([], 14, 41, dtype=tf.int32)
    low = tf.image.resize(tf.image.resize(x, [side, side], method="area"), [size, size])
    x = tf.where(tf.random.uniform([n, 1, 1, 1]) < 0.5, low, x)
    contrast = tf.random.uniform([n, 1, 1, 1], 0.6, 1.4)
    brightness = tf.random.uniform([n, 1, 1, 1], -0.25, 0.25)
    noise = tf.random.uniform([n, 1, 1, 1], 0.0, 0.06) * tf.random.normal(tf.shape(x))
    return tf.clip_by_value(x * contrast + brightness + noise, -1.0, 1.0)


def _augmenter(keras: Any, seed: int) -> Any:
    """Flip, +-10 deg rotation, +-10% shift and zoom: standard FER2013 augmentation."""
    layers = keras.layers
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 3),
        ],
        name="augment",
    )


def cosine_lr(epoch: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr * min_lr_ratio`` at the last epoch."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    span = max(1, config.epochs - config.warmup_epochs - 1)
    t = min(1.0, (epoch - config.warmup_epochs) / span)
    low = config.lr * config.min_lr_ratio
    return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * t))


def _callbacks(
    keras: Any,
    config: TrainConfig,
    out: Path,
    previous: dict[str, list] | None = None,
    data_sha: str = "",
) -> list[Any]:
    """Schedule, checkpoints (best and last), early stop and the CSV log.

    ``previous`` is the history of a resumed run: the best checkpoint must then
    beat its best epoch, and the log is appended to.
    """
    best_so_far = max(previous.get("val_accuracy", [None]) or [None]) if previous else None
    cbs: list[Any] = [_EpochTimer(keras)]
    if config.schedule == "cosine":
        cbs.append(keras.callbacks.LearningRateScheduler(lambda e, _lr: cosine_lr(e, config)))
    else:
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy",
                mode="max",
                factor=0.5,
                patience=max(2, config.patience // 4),
            )
        )
    cbs += [
        _Checkpoints(keras)(out, previous or {}, best_so_far, data_sha),
        _EarlyStopping(keras)(previous or {}, patience=config.patience),
    ]
    return cbs


def _EarlyStopping(keras: Any) -> Any:  # noqa: N802 - factory standing in for a class
    """Keras's early stop on validation accuracy that, on a resumed run, starts from the
    earlier epochs' best and wait (a fresh one forgot them, and trained on past the stop
    an uninterrupted run would have made)."""

    class EarlyStopping(keras.callbacks.EarlyStopping):
        def __init__(self, previous: dict[str, list], patience: int) -> None:
            super().__init__(monitor="val_accuracy", mode="max", patience=patience)
            self.previous = list(previous.get("val_accuracy", []))

        def on_train_begin(self, logs: dict | None = None) -> None:
            super().on_train_begin(logs)
            if self.previous:
                best = int(np.argmax(self.previous))
                self.best, self.best_epoch = self.previous[best], best
                self.wait = len(self.previous) - 1 - best

    return EarlyStopping


def _save_atomic(
    model: Any, path: Path, epochs: int | None = None, data_sha: str | None = None
) -> None:
    """Save ``model`` as HDF5 through ``atomic_write``: a kill mid-save leaves the previous
    file whole. ``epochs`` and the data's fingerprint are recorded in the file."""
    import h5py

    with atomic_write(path) as tmp:  # the temp name keeps .h5: Keras picks HDF5 from it
        model.save(str(tmp))
        if epochs is not None:
            with h5py.File(tmp, "a") as fh:
                fh.attrs[EPOCHS_ATTR] = epochs
                if data_sha:
                    fh.attrs[DATA_ATTR] = data_sha


def _Checkpoints(keras: Any) -> Any:  # noqa: N802 - factory standing in for a class
    """Callback writing, after each epoch, the log row, ``best.h5`` if it improved, ``last.h5``.

    In that order and each atomically: the log never lags the weights it describes, and
    ``last.h5`` says which epoch it holds, so a resume cuts a log row whose weights never
    reached the disk (see ``_resumable_epochs``).
    """

    class Checkpoints(keras.callbacks.Callback):
        def __init__(
            self, out: Path, previous: dict[str, list], best: float | None, data_sha: str
        ) -> None:
            super().__init__()
            self.out, self.history, self.best = out, {k: list(v) for k, v in previous.items()}, best
            self.data_sha = data_sha

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
            for key, value in row.items():
                self.history.setdefault(key, []).append(value)
            _write_history(self.out, self.history)
            accuracy = row.get("val_accuracy")
            if accuracy is not None and (self.best is None or accuracy > self.best):
                self.best = accuracy
                _save_atomic(self.model, self.out / BEST_FILE)
            _save_atomic(self.model, self.out / LAST_FILE, epochs=epoch + 1, data_sha=self.data_sha)

    return Checkpoints


def _EpochTimer(keras: Any) -> Any:  # noqa: N802 - factory standing in for a class
    """Callback adding ``epoch_seconds`` and ``lr`` to the logs (before CSVLogger sees them)."""

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["epoch_seconds"] = round(time.time() - self._t0, 2)
                logs["lr"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))

    return EpochTimer()


def _write_summary(
    out: Path,
    config: TrainConfig,
    model: Any,
    history: dict[str, list],
    seconds: float,
    n_train: int,
    n_val: int,
    stopped_early: bool = False,
    validation: str = "PublicTest",
) -> dict[str, Any]:
    val_acc = history.get("val_accuracy", [])
    best = int(np.argmax(val_acc)) if val_acc else -1
    summary = {
        "best_checkpoint": str(out / BEST_FILE),
        "best_epoch": best + 1,
        "best_val_accuracy": float(val_acc[best]) if val_acc else None,
        "epochs_run": len(val_acc),
        "stopped_early": stopped_early,
        # all epochs, across resumes (``seconds``, this invocation's, if none were logged)
        "train_seconds": round(float(np.sum(history.get("epoch_seconds", [seconds]))), 1),
        "seconds_per_epoch": round(float(np.mean(history.get("epoch_seconds", [0.0]))), 1),
        "params": int(model.count_params()),
        "n_train": n_train,
        "n_val": n_val,
        "validation": validation,
        "config": asdict(config),
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary

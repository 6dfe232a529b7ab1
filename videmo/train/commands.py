"""Click commands ``train``, ``evaluate`` and ``import-keras``.

They are plain ``click.Command`` objects; the main ``videmo`` group registers
them with ``cli.add_command``. TensorFlow is imported lazily inside the
commands so ``videmo --help`` stays fast and works without the ``[train]``
extra. ``python -m videmo.train.commands`` runs them standalone.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from videmo.spec import ModelSpec

if TYPE_CHECKING:
    from videmo.train.train import TrainConfig


def check_suffix(path: Path, suffix: str, what: str) -> None:
    """Refuse an output name without ``suffix``: a forgotten or swapped argument would
    otherwise overwrite an input (``import-keras a.h5 b.h5`` wrote ONNX over ``b.h5``)."""
    if path.suffix.lower() != suffix:
        raise click.UsageError(
            f"{path} does not end in {suffix}: give the {what} a {suffix} name "
            "(a file of another kind is never overwritten)"
        )


def _check_model_target(path: Path, what: str) -> None:
    """Before TensorFlow loads: an ``.onnx`` name, and no file where a folder must be
    (``-o afile/x.onnx`` gave a FileExistsError traceback after the conversion)."""
    import os

    from videmo.errors import OutputError
    from videmo.outputs.atomic import check_output_file

    check_suffix(path, ".onnx", what)
    if path.parent.is_dir():
        check_output_file(path)  # a folder, a read-only file or folder: refused now
        return
    # export makes the missing folders: the first that exists must be a writable folder
    first = next(parent for parent in path.parents if parent.exists())
    if not first.is_dir():
        raise OutputError(f"cannot write {path}: {first} is not a folder")
    if not os.access(first, os.W_OK):
        raise OutputError(f"cannot write {path}: {first} is not writable")


def _finite(param: click.Parameter, value: float, positive: bool) -> float:
    """A normalisation constant that is a number (and above 0 for a divisor): ``--std 0``
    made every face infinite and was then blamed on the model ("not softmax")."""
    if not math.isfinite(value) or (positive and value <= 0):
        need = "a finite number above 0" if positive else "a finite number"
        raise click.BadParameter(f"{value} is not {need}", param=param)
    return value


def _require_tf() -> None:
    """Fail with one line when the [train] extra is missing."""
    for module in ("tensorflow", "tf_keras", "tf2onnx", "onnx"):
        if importlib.util.find_spec(module) is None:
            raise click.ClickException(f"{module} is not installed: pip install 'videmo[train]'")


class _TrainOption(click.Option):
    """An option of ``videmo train`` whose --help shows TrainConfig's default.

    The default itself stays None so a job file's value is not overridden; the
    trainer module (0.3 s to import) is read only when the help is shown.
    """

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from dataclasses import fields

        from videmo.train.train import TrainConfig

        default = {field.name: field.default for field in fields(TrainConfig)}.get(self.name)
        record = super().get_help_record(ctx)
        if record is None or default in (None, ""):
            return record
        return record[0], f"{record[1]}  [default: {default}]"  # click's own form


@click.command("train")
@click.option(
    "--job",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML job file (keys of TrainConfig); command-line options override it.",
)
@click.option("--data", cls=_TrainOption, help="FER2013 CSV (.csv/.csv.gz) or image-folder root.")
@click.option(
    "--out", cls=_TrainOption, help="Output folder for checkpoints, history and the ONNX model."
)
@click.option(
    "--epochs", cls=_TrainOption, type=int, help="Epochs in all (a resumed run counts those done)."
)
@click.option("--batch-size", cls=_TrainOption, type=int, help="Faces per training step.")
@click.option("--lr", cls=_TrainOption, type=float, help="Peak learning rate.")
@click.option(
    "--patience", cls=_TrainOption, type=int, help="Early-stopping patience (epochs, val accuracy)."
)
@click.option(
    "--seed",
    cls=_TrainOption,
    type=int,
    help="Seed of the shuffling, augmentation and initial weights.",
)
@click.option(
    "--width",
    cls=_TrainOption,
    type=float,
    help="Filter-count multiplier (1 = paper's mini-Xception).",
)
@click.option(
    "--limit-per-split",
    cls=_TrainOption,
    type=int,
    help="Use a seeded subset per split (tiny runs).",
)
@click.option("--threads", cls=_TrainOption, type=int, help="CPU threads for TensorFlow.")
@click.option(
    "--export/--no-export",
    default=True,
    show_default=True,
    help="Export the best checkpoint to <out>/model.onnx with a parity check.",
)
def train_command(job: Path | None, export: bool, **options: object) -> None:
    """Train the emotion model on FER2013 (PublicTest is validation, never trained on).

    Needs --job or --data, e.g. `videmo train --job jobs/train-minixception.toml`
    (hours on a CPU; a stopped run resumes from its last epoch). A job file's
    values replace the defaults shown; options given here replace both.
    """
    if job is None and options.get("data") is None:
        raise click.UsageError("give --job FILE or --data FER2013_CSV (see jobs/ for examples)")
    from videmo.progress import install_interrupt_handler
    from videmo.train.train import TrainConfig, train

    config = (  # checked (file, keys, types, ranges) before TensorFlow is looked for
        TrainConfig.from_toml(job, **options)
        if job
        else TrainConfig(**{k: v for k, v in options.items() if v is not None})
    )
    _require_tf()
    install_interrupt_handler()  # SIGTERM stops training as Ctrl-C does: "videmo: terminated"
    summary = train(config)
    click.echo(
        f"best {summary.get('validation', 'PublicTest')} accuracy "
        f"{summary['best_val_accuracy']:.4f} at epoch "
        f"{summary['best_epoch']}/{summary['epochs_run']} "
        f"({summary['seconds_per_epoch']} s/epoch) -> {summary['best_checkpoint']}"
    )
    if export:
        onnx_path = _export_run(config)
        click.echo(f"exported {onnx_path}")


def _export_run(config: TrainConfig) -> Path:
    from videmo.train.export import export_runs

    result = export_runs([Path(config.out)], Path(config.out) / "model.onnx")
    click.echo(
        f"parity max abs diff {result['max_abs_diff']:.2e} on {result['parity_images']} real faces"
    )
    return Path(result["path"])


@click.command("export")
@click.argument(
    "run_dirs",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write (atomically).",
)
@click.option(
    "--flip-tta/--no-flip-tta",
    default=None,
    help="Bake mirror-image averaging into the graph [default: the first run's flip_tta].",
)
@click.option("--data", help="FER2013 data for the parity check [default: the first run's].")
def export_command(
    run_dirs: tuple[Path, ...], out: Path, flip_tta: bool | None, data: str | None
) -> None:
    """Export the best checkpoint of RUN_DIRS (videmo train outputs) to one ONNX model.

    Several runs (e.g. the same job with different --seed, or different widths)
    are exported as an ensemble: the graph averages their probabilities. tf2onnx
    converts it and the ONNX outputs must match Keras to 1e-4 on 256 real faces.
    """
    _check_model_target(out, "ONNX model")
    resolved = [run.resolve() for run in run_dirs]
    twice = next((run for k, run in enumerate(run_dirs) if resolved[k] in resolved[:k]), None)
    if twice is not None:  # allowed (an ensemble of one net is a check), but rarely meant
        click.echo(f"videmo: note: {twice} is given twice: its net counts twice in the average",
                   err=True)  # fmt: skip
    _require_tf()
    from videmo.train.export import export_runs

    result = export_runs(list(run_dirs), out, flip_tta=flip_tta, data=data)
    click.echo(
        f"wrote {result['path']} (parity max abs diff {result['max_abs_diff']:.2e} "
        f"on {result['parity_images']} real faces)"
    )


@click.command("evaluate")
@click.argument("model", required=False)
@click.option("--data", required=True, help="FER2013 CSV (.csv/.csv.gz) or image-folder root.")
@click.option("--flip-tta", is_flag=True, help="Average predictions with the mirrored face.")
@click.option("--limit-per-split", type=int, help="Evaluate a seeded subset per split.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the full results as JSON.",
)
@click.option(
    "--confusion-png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the confusion matrix of PublicTest (else the first split) as PNG.",
)
@click.option(
    "--bench",
    is_flag=True,
    help="Also measure CPU throughput (faces/s, batch 32, 2 threads) with onnxruntime.",
)
def evaluate_command(
    model: str | None,
    data: str,
    flip_tta: bool,
    limit_per_split: int | None,
    json_out: Path | None,
    confusion_png: Path | None,
    bench: bool,
) -> None:
    """Evaluate an ONNX emotion model (default: the shipped one) on every FER2013 split.

    Uses onnxruntime only and the preprocessing stored in the model's metadata.
    """
    import json

    from videmo.models import EMOTION_FILE, model_path
    from videmo.outputs.atomic import write_text_atomic
    from videmo.train.evaluate import (
        bench_faces_per_second,
        check_image_target,
        check_results_target,
        evaluate,
        save_confusion_png,
    )

    if json_out is not None:  # before the evaluation, not after
        check_suffix(json_out, ".json", "--json file")
        check_results_target(json_out)
    if limit_per_split is not None and limit_per_split < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit-per-split")
    if confusion_png is not None:
        check_image_target(confusion_png)
    path = model_path(model or EMOTION_FILE)
    results = evaluate(path, data, flip_tta=flip_tta, limit_per_split=limit_per_split)
    _print_results(results)
    if bench:
        results["faces_per_second_batch32_threads2"] = fps = bench_faces_per_second(path)
        click.echo(f"CPU throughput: {fps:,.0f} faces/s (batch 32, 2 threads, model only)")
    if json_out:
        write_text_atomic(json_out, json.dumps(results, indent=2) + "\n")
    if confusion_png and results["splits"]:
        name = "PublicTest" if "PublicTest" in results["splits"] else next(iter(results["splits"]))
        split = results["splits"][name]
        title = f"{path.name} on {name}: accuracy {split['accuracy']:.3f}"
        save_confusion_png(split["confusion"], results["classes"], confusion_png, title)
        click.echo(f"wrote {confusion_png}")


def _print_results(results: dict) -> None:
    """One rich table per split: per-class accuracy and support, then the overall accuracy."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tta = " (flip TTA)" if results["flip_tta"] else ""
    for name, split in results["splits"].items():
        table = Table(title=f"{name}{tta}", caption=f"accuracy {split['accuracy']:.4f}")
        table.add_column("class")
        table.add_column("support", justify="right")
        table.add_column("accuracy", justify="right")
        for cls in results["classes"]:
            acc = split["per_class"][cls]
            table.add_row(cls, str(split["support"][cls]), "-" if acc is None else f"{acc:.4f}")
        table.add_section()
        table.add_row("overall", str(split["n"]), f"{split['accuracy']:.4f}")
        if split.get("ferplus_accuracy") is not None:
            ferplus = f"{split['ferplus_accuracy']:.4f}"
            table.add_row("FER+ majority", str(split["ferplus_n"]), ferplus)
        console.print(table)


@click.command(
    "import-keras", short_help="Convert a Keras emotion model (.h5) to videmo's ONNX format."
)
@click.argument(
    "h5_paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mean",
    type=float,
    default=ModelSpec.mean,
    show_default=True,
    callback=lambda ctx, param, value: _finite(param, value, positive=False),
    help="Normalisation mean on the 0-1 scale (mini-Xception: 0.5).",
)
@click.option(
    "--std",
    type=float,
    default=ModelSpec.std,
    show_default=True,
    callback=lambda ctx, param, value: _finite(param, value, positive=True),
    help="Normalisation std on the 0-1 scale (mini-Xception: 0.5).",
)
@click.option("--data", help="FER2013 data for the parity check on real faces (else random).")
@click.option(
    "--flip-tta/--no-flip-tta",
    default=False,
    show_default=True,
    help="Bake mirror-image averaging into the graph.",
)
def import_keras_command(
    h5_paths: tuple[Path, ...],
    out_path: Path,
    mean: float,
    std: float,
    data: str | None,
    flip_tta: bool,
) -> None:
    """Convert a Keras emotion model (e.g. _mini_XCEPTION.*.hdf5) to a videmo ONNX model.

    Several H5 files (one input size) become an ensemble: one graph averaging their
    probabilities on the same face.
    """
    _check_model_target(out_path, "ONNX model (OUT_PATH, the last argument)")
    _require_tf()
    from videmo.train.keras_import import import_keras

    faces = None
    if data:
        from videmo.train.data import load_fer2013

        splits = load_fer2013(data, limit_per_split=256, seed=0)
        faces = (splits.get("PublicTest") or next(iter(splits.values()))).images
    result = import_keras(
        list(h5_paths), out_path, mean=mean, std=std, parity_faces=faces, flip_tta=flip_tta
    )
    click.echo(
        f"wrote {result['path']} (parity max abs diff {result['max_abs_diff']:.2e}; "
        f"spec {result['spec']})"
    )


__all__ = ["evaluate_command", "export_command", "import_keras_command", "train_command"]


if __name__ == "__main__":  # pragma: no cover - standalone use without the main CLI
    group = click.Group(
        "videmo-train",
        commands=[train_command, export_command, evaluate_command, import_keras_command],
    )
    group()

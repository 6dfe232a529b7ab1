"""Click commands ``train``, ``evaluate`` and ``import-keras``.

They are plain ``click.Command`` objects; the main ``videmo`` group registers
them with ``cli.add_command``. TensorFlow is imported lazily inside the
commands so ``videmo --help`` stays fast and works without the ``[train]``
extra. ``python -m videmo.train.commands`` runs them standalone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from videmo.spec import EMOTIONS

TRAIN_EXTRA_HINT = "TensorFlow is not installed: pip install 'videmo[train]'"


def _require_tf() -> None:
    """Fail with one line when the [train] extra is missing."""
    for module in ("tensorflow", "tf_keras", "tf2onnx", "onnx"):
        if importlib.util.find_spec(module) is None:
            raise click.ClickException(f"{module} is not installed: pip install 'videmo[train]'")


@click.command("train")
@click.option("--job", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML job file (keys of TrainConfig); command-line options override it.")
@click.option("--data", help="FER2013 CSV (.csv/.csv.gz) or image-folder root.")
@click.option("--out", help="Output folder for checkpoints, history and the ONNX model.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--patience", type=int, help="Early-stopping patience (epochs, val accuracy).")
@click.option("--seed", type=int)
@click.option("--width", type=float, help="Filter-count multiplier (1 = paper's mini-Xception).")
@click.option("--limit-per-split", type=int, help="Use a seeded subset per split (tiny runs).")
@click.option("--threads", type=int, help="CPU threads for TensorFlow.")
@click.option("--export/--no-export", default=True, show_default=True,
              help="Export the best checkpoint to <out>/model.onnx with a parity check.")
def train_command(job: Path | None, export: bool, **options: object) -> None:
    """Train the emotion model on FER2013 (PublicTest is validation, never trained on)."""
    _require_tf()
    from videmo.train.train import TrainConfig, train

    config = TrainConfig.from_toml(job, **options) if job else TrainConfig(
        **{k: v for k, v in options.items() if v is not None}
    )
    summary = train(config)
    click.echo(
        f"best PublicTest accuracy {summary['best_val_accuracy']:.4f} at epoch "
        f"{summary['best_epoch']}/{summary['epochs_run']} "
        f"({summary['seconds_per_epoch']} s/epoch) -> {summary['best_checkpoint']}"
    )
    if export:
        onnx_path = _export_run(config)
        click.echo(f"exported {onnx_path}")


def _export_run(config: object) -> Path:
    from videmo.train.data import load_fer2013
    from videmo.train.export import export_onnx
    from videmo.train.train import BEST_FILE, default_spec

    out = Path(config.out)
    splits = load_fer2013(config.data, limit_per_split=256, seed=0)
    faces = (splits.get("PublicTest") or splits["Training"]).images
    result = export_onnx(out / BEST_FILE, out / "model.onnx", default_spec(config), faces)
    click.echo(f"parity max abs diff {result['max_abs_diff']:.2e} on {len(faces)} real faces")
    return Path(result["path"])


__all__ = ["EMOTIONS", "TRAIN_EXTRA_HINT", "train_command"]


if __name__ == "__main__":  # pragma: no cover - standalone use without the main CLI
    group = click.Group("videmo-train", commands=[train_command])
    group()

"""Average two Keras nets of one architecture weight by weight (WiSE-FT, Wortsman et al. 2022).

Interpolating a fine-tuned net with the net it started from is known to keep more of the
starting net's robustness to new data than either end. ``--alpha`` is the fine-tuned share.

    python benchmarks/average_keras_weights.py /tmp/fer/fer/data/emotion_model.hdf5 \\
        runs/finetune-paper-resample/last.h5 wise.h5 --alpha 0.5
    videmo import-keras wise.h5 wise.onnx --flip-tta
"""

from __future__ import annotations

import argparse

from videmo.train.export import load_keras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", help="the net the fine-tune started from (.h5)")
    parser.add_argument("tuned", help="the fine-tuned net (.h5)")
    parser.add_argument("out", help="where to save the average (.h5)")
    parser.add_argument("--alpha", type=float, default=0.5, help="share of the fine-tuned net")
    args = parser.parse_args()
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha is a share, between 0 and 1 (got {args.alpha})")
    start, tuned = load_keras(args.start), load_keras(args.tuned)
    pairs = zip(start.get_weights(), tuned.get_weights(), strict=True)
    start.set_weights([(1 - args.alpha) * a + args.alpha * b for a, b in pairs])
    start.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""How often FER+'s majority label agrees with FER2013's own label, per split.

It bounds what one model can score on both: a model that matched FER+'s majority
perfectly would score about the agreement rate on FER2013's labels.

    python benchmarks/ferplus_agreement.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videmo.spec import EMOTIONS
from videmo.train.data import ferplus_path_for, load_fer2013, load_ferplus

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data/fer2013/fer2013.csv.gz"))
    args = parser.parse_args()
    splits = load_fer2013(args.data)
    votes = load_ferplus(ferplus_path_for(args.data))
    for name, split in splits.items():
        majority = votes.majority[split.rows]
        has = majority >= 0
        agree = majority[has] == split.labels[has]
        print(
            f"{name}: {len(split)} faces, FER+ majority on {has.mean():.1%}, "
            f"agreeing with the FER2013 label on {agree.mean():.1%} of those"
        )
        for k, emotion in enumerate(EMOTIONS):
            mine = split.labels[has] == k
            if mine.any():
                print(f"  {emotion:>8}: {agree[mine].mean():.1%} of {mine.sum()}")


if __name__ == "__main__":
    main()

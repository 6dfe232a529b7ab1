"""How often FER+'s majority label agrees with FER2013's own label, and what that allows one model.

Per split: how often the two label sets agree. With ``--model``, on PublicTest: the model's
accuracy on the faces where they agree, which label it gives where they disagree, and the
least accuracy on agreeing faces at which any model could reach both goals of issue 9
(FER2013 labels >= 67 %, FER+ majority >= 80 %): a face where the labels disagree can be
right by one of them at most, so the two goals pull apart there.

    python benchmarks/ferplus_agreement.py [--model MODEL.onnx | --model shipped]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from videmo.spec import EMOTIONS
from videmo.train.data import Split, ferplus_path_for, load_fer2013, load_ferplus

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Issue 9's goals for the shipped model on PublicTest.
GOAL_FER2013, GOAL_FERPLUS = 0.67, 0.80


def agreement(splits: dict[str, Split], majority_of_rows: np.ndarray) -> None:
    """Print, per split and class, how often FER+'s majority equals the FER2013 label."""
    for name, split in splits.items():
        majority = majority_of_rows[split.rows]
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


def least_agreeing_accuracy(
    share_agree: float, share_disagree: float, share_none: float, right_none: float
) -> float:
    """The least accuracy on agreeing faces at which both goals can hold together.

    Shares are of all faces: labels agree, disagree, no FER+ majority. The model is
    granted its accuracy ``right_none`` on faces without a majority, and on every face
    where the labels disagree it is granted one of the two labels (the best case): as
    many FER+ ones as the FER+ goal needs, FER2013's on the rest. Solving both goals
    for the agreeing faces' accuracy ``a`` gives a linear bound.
    """  # fmt: skip
    with_majority = share_agree + share_disagree
    # FER+ goal: a * agree + d * disagree >= GOAL_FERPLUS * with_majority (d: FER+ share)
    # FER2013 goal: a * agree + (1 - d) * disagree + right_none * none >= GOAL_FER2013
    # Taking d at its least and solving for a:
    need = GOAL_FER2013 + GOAL_FERPLUS * with_majority - share_disagree - right_none * share_none
    return need / (2 * share_agree)


def model_standing(split: Split, majority: np.ndarray, predicted: np.ndarray) -> None:
    """Print where a model's answers fall, and the bound above for it."""
    has = majority >= 0
    agree, disagree, none = has & (majority == split.labels), has & (majority != split.labels), ~has
    right = predicted == split.labels
    a, e = right[agree].mean(), right[none].mean()
    by_fer2013, by_ferplus = right[disagree].mean(), (predicted == majority)[disagree].mean()
    print(
        f"\nThe model on PublicTest: FER2013 labels {right.mean():.1%}, "
        f"FER+ majority {(predicted == majority)[has].mean():.1%}\n"
        f"  labels agree ({agree.mean():.1%} of faces): right on {a:.1%}\n"
        f"  labels disagree ({disagree.mean():.1%}): FER2013's label {by_fer2013:.1%}, "
        f"FER+'s {by_ferplus:.1%}, neither {1 - by_fer2013 - by_ferplus:.1%}\n"
        f"  no FER+ majority ({none.mean():.1%}): right on {e:.1%}"
    )
    bound = least_agreeing_accuracy(agree.mean(), disagree.mean(), none.mean(), e)
    print(
        f"Both goals ({GOAL_FER2013:.0%} FER2013, {GOAL_FERPLUS:.0%} FER+) need at least "
        f"{bound:.1%} right where the labels agree (this model: {a:.1%}), and then one of the "
        "two labels on every face where they disagree."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data/fer2013/fer2013.csv.gz"))
    parser.add_argument("--model", help="an ONNX model, or 'shipped', to place against the goals")
    args = parser.parse_args()
    splits = load_fer2013(args.data)
    votes = load_ferplus(ferplus_path_for(args.data))
    agreement(splits, votes.majority)
    if args.model:
        from videmo.emotion import EmotionModel

        test = splits["PublicTest"]
        model = EmotionModel(None if args.model == "shipped" else args.model, device="cpu")
        predicted = model.predict(test.images).argmax(axis=1)
        model_standing(test, votes.majority[test.rows], predicted)


if __name__ == "__main__":
    main()

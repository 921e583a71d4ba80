#!/usr/bin/env python
"""Run ``training.toyworld.train`` (or ``training.toyworld.evaluate`` with ``--evaluate``) from any directory.

Equivalent to ``python -m training.toyworld.train ...`` run at the root of a checkout:

    python scripts/train_toyworld.py --device cuda --out tuneavideo/models/toy-world --vae-time 140 --unet-time 300
    python scripts/train_toyworld.py --evaluate --model tuneavideo/models/toy-world --n 100
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> None:
    """Dispatch ``argv`` to the evaluation (first argument ``--evaluate``) or the training entry point."""
    sys.path.insert(0, str(ROOT))  # the checkout: ``training`` is not part of the installed package
    if argv[:1] == ["--evaluate"]:
        from training.toyworld.evaluate import main as evaluate

        evaluate(argv[1:])
    else:
        from training.toyworld.train import main as train

        train(argv)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python
"""Run ``tuneavideo.toyworld.train`` (or ``evaluate`` with ``--evaluate``) without importing the rest of the
package: ``tuneavideo/__init__`` pulls in the whole engine, which toy-world training does not need (and a GPU
box may run this from a tree whose other modules are mid-change).

    python scripts/train_toyworld.py --device cuda --out models/toy-world --vae-time 140 --unet-time 300
    python scripts/train_toyworld.py --evaluate --model models/toy-world --n 100
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bare_package() -> None:
    pkg = types.ModuleType("tuneavideo")
    pkg.__path__ = [str(ROOT / "tuneavideo")]
    sys.modules.setdefault("tuneavideo", pkg)


if __name__ == "__main__":
    _bare_package()
    argv = sys.argv[1:]
    if argv[:1] == ["--evaluate"]:
        from tuneavideo.toyworld.evaluate import main

        main(argv[1:])
    else:
        from tuneavideo.toyworld.train import main

        main(argv)

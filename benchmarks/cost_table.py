"""Write the GPU cost table the estimates use (``tuneavideo/data/gpu_costs.json``) from benchmark JSON.

Per GPU: lines ``seconds = a + b * units`` per speed mode, fitted to ``benchmarks/speed.py``'s cells
(``units`` = frames x latent pixels, x2 rows for a CFG step), the peak memory the same way, and the GPU's
fp16 matmul throughput from ``benchmarks/job_time.py`` (what other GPUs are scaled by).
``tests/test_costs.py`` checks that the shipped table is what this script computes.

    python benchmarks/cost_table.py benchmarks/speed_h200_512.json:benchmarks/job_h200_24f.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def build_table(pairs: list[str]) -> dict:
    """``{gpu: entry}`` from ``SPEED_JSON:JOB_JSON`` pairs (paths relative to the repository root)."""
    from tuneavideo.costs import gpu_rows

    table = {}
    for pair in pairs:
        speed, job = pair.split(":")
        entry = gpu_rows(json.loads((ROOT / speed).read_text()), speed)
        entry["matmul_fp16_tflops"] = json.loads((ROOT / job).read_text())["matmul_fp16_tflops"]
        table[entry["gpu"]] = entry
    return table


DEFAULT_PAIRS = ["benchmarks/speed_h200_512.json:benchmarks/job_h200_24f.json"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="*", default=DEFAULT_PAIRS, help="SPEED_JSON:JOB_JSON per GPU")
    ap.add_argument("--out", default=str(ROOT / "tuneavideo" / "data" / "gpu_costs.json"))
    args = ap.parse_args()
    text = json.dumps(build_table(args.pairs), indent=2) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

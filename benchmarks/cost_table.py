"""Write the GPU cost table the estimates use (``tuneavideo/data/gpu_costs.json``) from benchmark JSON.

Per GPU: lines ``seconds = a + b * units`` per speed mode, fitted to ``benchmarks/speed.py``'s cells
(``units`` = frames x latent pixels, x2 rows for a CFG step), the peak memory the same way, the GPU's
fp16 matmul throughput from ``benchmarks/job_time.py`` (what other GPUs are scaled by), and each phase's
fixed seconds (encoding, decoding, writing, first use of the kernels and graphs) from whole jobs through the
Engine: what they took beyond their steps, the median over the jobs.
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
    """``{gpu: entry}`` from ``SPEED_JSON:JOB_JSON[,JOB_JSON...][:COLD_JOB_JSON[,...]]`` (paths relative to the
    repository root).

    The first job gives the GPU's matmul throughput; all of them give the fixed seconds of each phase. The cold
    jobs (run with an empty kernel cache) give what a machine's first job adds: the most any took beyond its
    estimate with the kernels compiled.
    """
    from tuneavideo.costs import fixed_seconds, gpu_rows, kernel_compile_seconds

    table = {}
    for pair in pairs:
        speed, jobs, *cold = pair.split(":")
        entry = gpu_rows(json.loads((ROOT / speed).read_text()), speed)
        runs = [json.loads((ROOT / job).read_text()) for job in jobs.split(",")]
        entry["matmul_fp16_tflops"] = runs[0]["matmul_fp16_tflops"]
        entry["fixed_s"] = fixed_seconds(entry, runs)
        entry["fixed_source"] = jobs.split(",")
        cold_jobs = tuple(json.loads((ROOT / job).read_text()) for job in cold[0].split(",")) if cold else ()
        entry["kernel_compile_s"] = kernel_compile_seconds(json.loads((ROOT / speed).read_text()), entry, cold_jobs)
        table[entry["gpu"]] = entry
    return table


# Fixed seconds from a job with the kernels already compiled (what all but a machine's first job see); what the
# first job adds (its kernel compile) is the table's kernel_compile_s, from jobs run with an empty kernel cache.
DEFAULT_PAIRS = [
    "benchmarks/speed_h200_512.json:benchmarks/job_h200_24f.json"
    ":benchmarks/job_h200_24f_cold.json,benchmarks/job_h200_8f.json"
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "pairs", nargs="*", default=DEFAULT_PAIRS, help="SPEED_JSON:JOB_JSON[,JOB_JSON...][:COLD_JOB_JSON] per GPU"
    )
    ap.add_argument("--out", default=str(ROOT / "tuneavideo" / "data" / "gpu_costs.json"))
    args = ap.parse_args()
    text = json.dumps(build_table(args.pairs), indent=2) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Cold start: `attnviz --help` and `attnviz list` never import torch; a cold `attnviz show cbam IMG` takes at most
1.5 s more than `python -c "import torch, torchvision"` (both measured here, in one run, as medians of fresh
processes).

Usage: python bench/cold_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "chelsea.png"


def timed(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imports_torch(args: list[str]) -> bool:
    probe = (
        "import sys, runpy; sys.argv = ['attnviz', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('attnviz', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False)
    return "NO-TORCH" not in result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command in (["--help"], ["list"]):
        loaded = imports_torch(command)
        print(f"attnviz {' '.join(command)}: {'imports torch (FAIL)' if loaded else 'does not import torch (PASS)'}")
    python = sys.executable
    baseline = timed([python, "-c", "import torch, torchvision"], args.repeats)
    with tempfile.TemporaryDirectory() as out:
        show = timed(
            [python, "-m", "attnviz", "show", "cbam", str(SAMPLE), "--out", out, "--device", "cpu"], args.repeats
        )
    extra = show - baseline
    print(f"python -c 'import torch, torchvision': {baseline:.2f} s (median of {args.repeats})")
    print(f"attnviz show cbam {SAMPLE.name}:         {show:.2f} s (median of {args.repeats})")
    print(
        f"difference: {extra:.2f} s (goal <= 1.5 s), ratio {show / baseline:.2f}x -> "
        f"{'PASS' if extra <= 1.5 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()

"""Assemble benchmarks/BENCHMARKS.md from the RESULTS-*.md files the benchmark scripts write.

python benchmarks/assemble.py
"""

from __future__ import annotations

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = [
    "RESULTS-foundation.md",
    "RESULTS-kernels.md",
    "RESULTS-quantization.md",
    "RESULTS-llm.md",
    "RESULTS-openvino.md",
    "RESULTS-coreml.md",
    "RESULTS-hexagon.md",
    "RESULTS-mixed.md",
    "RESULTS-scale.md",
    "RESULTS-vq.md",
    "RESULTS-compile.md",
    "RESULTS-robustness.md",
    "RESULTS-coverage.md",
    "RESULTS-real-models.md",
]
SCRIPTS = {
    "RESULTS-foundation.md": "foundation.py",
    "RESULTS-kernels.md": "kernels.py",
    "RESULTS-quantization.md": "quantization.py",
    "RESULTS-llm.md": "llm_quality.py",
    "RESULTS-openvino.md": "openvino.py",
    "RESULTS-coreml.md": "coreml.py",
    "RESULTS-hexagon.md": "hexagon.py",
    "RESULTS-mixed.md": "mixed_precision.py",
    "RESULTS-scale.md": "scale.py",
    "RESULTS-vq.md": "vq.py",
    "RESULTS-compile.md": "compile.py",
    "RESULTS-robustness.md": "robustness.py",
    "RESULTS-coverage.md": "coverage.py",
    "RESULTS-real-models.md": "real_models.py",
}


def main() -> None:
    files = sorted(
        glob.glob(os.path.join(HERE, "RESULTS-*.md")),
        key=lambda p: (ORDER.index(os.path.basename(p)) if os.path.basename(p) in ORDER else 99, p),
    )
    parts = [
        "# edgec benchmarks",
        "",
        "Every table below is written by a script in `benchmarks/` on the development machine (2 cores, "
        "no GPU) and copied here unedited by `python benchmarks/assemble.py`. Ratios are measured side by "
        "side in one run; absolute times are noisy on shared machines.",
        "",
    ]
    for p in files:
        name = os.path.basename(p)
        parts.append(f"<!-- from {name}, written by benchmarks/{SCRIPTS.get(name, '?')} -->")
        parts.append(open(p, encoding="utf-8").read().rstrip())
        parts.append("")
    with open(os.path.join(HERE, "BENCHMARKS.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()

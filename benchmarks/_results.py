"""Shared by the benchmark scripts: write a results table next to them and echo it."""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write_results(name: str, lines: list[str]) -> str:
    """Write ``lines`` to ``benchmarks/name`` and print them; returns the text."""
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return text

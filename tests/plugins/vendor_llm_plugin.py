"""A test vendor plugin: target ``vendor-llm``, which emits the model as plain ONNX and runs it on onnxruntime (a
stand-in for a vendor's own runtime). It reaches edgec only through the public pieces a vendor has (``Target``,
``Capabilities``, the IR) and answers the contract's questions itself: its language-model runtime
(``logits_engine``) and its native mixed-precision set (``Capabilities.mixed``)."""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np

import edgec
from edgec.ir.onnx_io import to_onnx
from edgec.target import Artifact, Capabilities, Target

FILE = "model.onnx"


@dataclasses.dataclass(frozen=True)
class _Everything(Capabilities):
    def accepts(self, op: str) -> bool:  # the emitted ONNX expands edgec's ops; onnxruntime runs the rest
        return True


@dataclasses.dataclass(frozen=True)
class VendorLLM(Target):
    name: ClassVar[str] = "vendor-llm"
    summary: ClassVar[str] = "test vendor target: plain ONNX on onnxruntime"
    runtime: ClassVar[str] = "onnxruntime (vendor stand-in)"
    dynamic_shapes: ClassVar[bool] = True
    capabilities: ClassVar[Capabilities] = _Everything(
        ops=frozenset(), dtypes=frozenset({"f32", "i64", "i32", "bool"}),
        quant=frozenset({("symmetric", 4), ("symmetric", 8)}), mixed=(4, 8))

    def emit(self, model, out_dir: str, ctx) -> Artifact:
        import onnx
        onnx.save(to_onnx(model), os.path.join(out_dir, FILE), save_as_external_data=True, location="weights.bin")
        return Artifact([FILE, "weights.bin"])

    def _session(self, out_dir: str):
        import onnxruntime as ort
        return ort.InferenceSession(os.path.join(out_dir, FILE), providers=["CPUExecutionProvider"])

    def logits_engine(self, out_dir: str, files, ctx: int):
        sess = self._session(out_dir)

        def run(tokens: np.ndarray) -> np.ndarray:
            return sess.run(["logits"], {"input_ids": np.asarray(tokens, np.int64)[None]})[0][0]
        return "vendor runtime", run

    def run_artifact(self, out_dir: str, feeds, input_names=None) -> list[np.ndarray]:
        sess = self._session(out_dir)
        return sess.run(None, {k: np.asarray(v) for k, v in feeds.items()})


@edgec.hookimpl
def edgec_register_targets(registry):
    registry.register(VendorLLM)

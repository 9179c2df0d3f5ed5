"""The ``openvino`` target: edgec IR -> OpenVINO IR (``model.xml`` + ``model.bin``), run on the CPU plugin.

The model is built op by op with OpenVINO's opset API (``builder.py``). Weight formats:

* float weights: f32, or f16 with ``weights=f16`` (half the disk size; decompressed when compiled);
* edgec's quantized weights, carried exactly: symmetric grids as i8 (5-8 bits) / i4 (2-4 bits) codes,
  asymmetric as u8 / u4 codes with u8 / u4 zero points, per channel or group-wise, GGUF-style affine grids
  (codes * scale + offset), NF4 (``nf4`` element type when the codebook is OpenVINO's, else a Gather),
  k-means codebooks (Gather), and vector-quantized weights (``vq``: u4/u8/u16 indices Gather'ed from the
  flattened ``[codebooks * entries, dim]`` codebooks, float16 when exact). For MatMul layers the CPU
  plugin keeps integer and native-nf4 weights compressed in memory; Gather chains (codebooks, vq) it
  decompresses when it compiles the model (the file stays compressed);
  Convolution weights are decompressed when the model is compiled (disk saving only);
* activation quantization from calibration (``quantize{activations=...}``) as FakeQuantize, which the
  CPU plugin executes in int8.

``--verify`` compiles the saved IR on the OpenVINO CPU plugin with ``INFERENCE_PRECISION_HINT=f32`` (bf16
is the default on CPUs with AMX / AVX-512 BF16) and compares with the reference executor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, Node, QuantizedTensor
from ...ir.passes import PassContext, option
from ...target import Artifact, Capabilities, Target, VerifyPolicy
from .builder import _FALLBACK_PROBLEMS, ENCODERS, OVBuilder, _ov, fallback_ops, supported_ops

RT_KEY = "edgec_metadata"
_QUANT = ENCODERS.quant(
    {
        "symmetric": range(2, 9),
        "asymmetric": range(2, 9),
        "affine": range(2, 9),
        "codebook": range(2, 9),
        "vector": range(1, 17),
    }
)


def _stable_names(m) -> None:
    """OpenVINO names unnamed ops ``<Type>_<process-wide counter>``, so the same model compiled twice (or after
    another compile in the same process) would give a different model.xml. Renumber those names in graph
    order: identical inputs then give byte-identical IR files."""
    import re

    for i, op in enumerate(m.get_ordered_ops()):
        t = op.get_type_name()
        if re.fullmatch(re.escape(t) + r"_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{t}_{i}")


@dataclasses.dataclass(frozen=True)
class OpenVINOTarget(Target):
    name: ClassVar[str] = "openvino"
    summary: ClassVar[str] = "OpenVINO IR (.xml/.bin) with compressed weights, run on the OpenVINO CPU plugin"
    runtime: ClassVar[str] = "OpenVINO CPU plugin"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=supported_ops(),
        fallback_ops=fallback_ops(),
        # not f64 (the CPU plugin computes it in f32: 1e300 came back as 3.4e38) nor u64 (computed in 32 bits)
        dtypes=frozenset({"f32", "f16", "i64", "i32", "i16", "i8", "u32", "u16", "u8", "bool"}),
        quant=_QUANT,
        activation_quant=True,
        mixed=(4, 8),  # int4/int8 weight compression, as NNCF mixes them
        exact_division=False,
    )  # the CPU plugin's Divide is not correctly rounded

    def act_quant_policy(self) -> VerifyPolicy:
        return VerifyPolicy(
            "the CPU plugin runs FakeQuantize'd layers as int8 kernels with its own requantization "
            "arithmetic, so rounding-boundary flips accumulate layer by layer",
            min_cosine=0.999,
            max_rel_err=0.05,
        )

    dynamic_shapes: ClassVar[bool] = True  # symbolic dims stay dynamic: any batch / sequence length

    weights: str = option("f32", choices=("f32", "f16"), help="storage of weights that are not quantized")
    nf4: str = option(
        "exact",
        choices=("exact", "native"),
        help="NF4 weights: 'exact' keeps edgec's codebook bit for bit (native nf4 type only when "
        "the codebook is OpenVINO's); 'native' always uses the nf4 element type, whose "
        "table differs from bitsandbytes' by one float32 ulp at one level",
    )
    decompression: str = option(
        "exact",
        choices=("exact", "f16"),
        help="'exact': weights decompress to exactly the IR's values (in f16 where that "
        "is exact, else f32); 'f16': always in f16, as NNCF does - faster for int8, "
        "but each weight is rounded to float16",
    )
    threads: int = option(0, help="CPU threads for --verify (0: OpenVINO's default)")

    def accepts_node(self, node: Node, model: Model) -> bool:
        """A fallback op's variant that OpenVINO's ONNX frontend computes wrongly (``_FALLBACK_PROBLEMS``: RNN / GRU /
        LSTM of layout 1 or with peepholes, ...) is not taken, so decompose rewrites it where it can; what stays
        is refused when built, naming the variant."""
        if not super().accepts_node(node, model):
            return False
        if node.qualified_op == "AveragePool" and any(d != 1 for d in node.attr("dilations") or []):
            return False  # its lowering refuses dilations: decompose writes them as strided slices
        problem = _FALLBACK_PROBLEMS.get(node.qualified_op)
        return problem is None or node.qualified_op in self.capabilities.ops or problem(node) is None

    def check(self, model: Model) -> list[str]:
        problems = super().check(model)
        try:
            _ov()
        except UnsupportedError as e:
            problems.append(str(e))
        for v in model.graph.initializers.values():
            q = v.const
            if (
                isinstance(q, QuantizedTensor)
                and q.scheme_type.indexes_codebook
                and q.codebook is not None
                and np.asarray(q.codebook).ndim == 3
                and len(q.shape) != 2
            ):
                problems.append(f"weight {v.name!r}: per-group codebooks are carried for 2-D weights only")
        return problems

    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        ov, _ = _ov()
        b = OVBuilder(model, self.weights, self.nf4, self.decompression)
        m = b.build()
        # Model metadata (LLM configuration, tokenizer source, ...) travels in the IR's rt_info, under
        # edgec_metadata as one JSON string; large blobs (GGUF tokenizer tables) stay out.
        meta = {k: v for k, v in model.metadata.items() if isinstance(v, str) and len(v) < 65536}
        m.set_rt_info(json.dumps(meta, sort_keys=True), [RT_KEY])
        _stable_names(m)
        xml = os.path.join(out_dir, "model.xml")
        # compress_to_fp16 defaults to True and would halve every f32 constant behind our back.
        ov.save_model(m, xml, compress_to_fp16=False)
        fq = sum(1 for op in m.get_ops() if op.get_type_name() == "FakeQuantize")
        return Artifact(
            ["model.xml", "model.bin"],
            {
                "openvino_version": ov.__version__,
                "weights": self.weights,
                "weight_encodings": dict(b.encodings),
                "fake_quantize_nodes": fq,
                "inputs": [
                    {
                        "name": p.get_friendly_name(),
                        "shape": str(p.get_partial_shape()),
                        "dtype": p.get_element_type().get_type_name(),
                    }
                    for p in m.get_parameters()
                ],
            },
        )

    def compile(self, out_dir: str):
        """The saved IR compiled on the CPU plugin, f32 inference precision."""
        ov, _ = _ov()
        # f32 inference precision (bf16 is the default on AMX / AVX-512 BF16 CPUs) and no dynamic int8
        # quantization of activations in front of compressed-weight layers: the numbers the IR defines.
        cfg: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        core = ov.Core()
        return core.compile_model(core.read_model(os.path.join(out_dir, "model.xml")), "CPU", cfg)

    def logits_engine(self, out_dir: str, files, ctx: int):
        """Logits of a language model's IR on the CPU plugin (f32 inference precision)."""
        compiled = self.compile(out_dir)
        req = compiled.create_infer_request()
        out = compiled.outputs[0]

        def run(tokens: np.ndarray) -> np.ndarray:
            res = req.infer({"input_ids": np.asarray(tokens, np.int64)[None]})
            return np.array(res[out])[0]

        return "openvino", run

    def artifact_metadata(self, out_dir: str, files) -> dict[str, str] | None:
        return read_metadata(out_dir)

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None) -> list[np.ndarray]:
        return self._infer(self.compile(out_dir), list(input_names or feeds))(feeds)

    def runner(self, out_dir: str, files, input_names, threads: int):
        """The IR compiled once on the CPU plugin with ``threads`` inference threads, one infer request."""
        return self._infer(dataclasses.replace(self, threads=threads).compile(out_dir), list(input_names))

    @staticmethod
    def _infer(compiled, names: list[str]):
        req = compiled.create_infer_request()

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            # np.require keeps 0-d arrays 0-d (np.ascontiguousarray returns at least 1-d: a scalar input became [1])
            res = req.infer({n: np.require(np.asarray(feeds[n]), requirements="C") for n in names})
            return [np.array(res[o]) for o in compiled.outputs]

        return run


def read_metadata(artifact_dir: str) -> dict[str, str]:
    """The edgec model metadata an OpenVINO artifact carries (see :meth:`OpenVINOTarget.emit`)."""
    ov, _ = _ov()
    m = ov.Core().read_model(os.path.join(artifact_dir, "model.xml"))
    if not m.has_rt_info([RT_KEY]):
        return {}
    return json.loads(m.get_rt_info([RT_KEY]).astype(str))


def runtime_weight_precisions(compiled) -> dict[str, str]:
    """Name -> runtime precision of the FullyConnected / MatMul layers of a compiled model (what the CPU
    plugin really executes), read from the runtime model's rt_info."""
    out = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in ("FullyConnected", "MatMul"):
            out[op.get_friendly_name()] = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
    return out


@hookimpl
def edgec_register_targets(registry):
    registry.register(OpenVINOTarget)

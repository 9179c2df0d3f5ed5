"""The ``gguf`` target: a llama.cpp-loadable GGUF file from an edgec language model.

Weights are written in the GGUF type their IR form already lies on: a ``QuantizedTensor`` with layout
``gguf.<TYPE>`` (from ``quantize{gguf=TYPE}``) is packed bit for bit; float matrices are written as the
``ftype`` option says (F16, BF16 or F32), after the target's own pipeline has rounded them in the IR (so
verification sees exactly what the file holds); norms and biases stay F32, as llama.cpp expects.
Architecture metadata is regenerated from the model's configuration; everything else the source GGUF
carried (tokenizer, chat template, general.*) is copied back.

``--verify`` loads the file in llama.cpp (llama-cpp-python), evaluates the verification tokens and
compares every position's logits with the reference executor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...api.gguf import FLOAT_TYPES
from ...api.llama_cpp import llama_cpp_engine, llama_cpp_generator, llama_cpp_speed, load_llama
from ...api.llm import GGUF_KV_KEY, SOURCE_KEY, LLMConfig, permute_rows, weight_names
from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, QuantizedTensor
from ...ir.passes import Pass, PassContext, option
from ...target import Artifact, Capabilities, Target, VerifyPolicy
from .encode import EncodeError, encode
from .round_float_weights import RoundFloatWeights

FILE = "model.gguf"
# General file types (llama_ftype) by the type most weights use; llama.cpp only reports it.
_FTYPE = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K": 12,
    "Q4_K": 15,
    "Q5_K": 17,
    "Q6_K": 18,
    "IQ4_NL": 25,
    "BF16": 32,
}


@dataclasses.dataclass(frozen=True)
class GGUFTarget(Target):
    name: ClassVar[str] = "gguf"
    summary: ClassVar[str] = "GGUF file for llama.cpp (llama/qwen2 decoders; F32/F16/BF16, Q*_0/1, K-quants, IQ4_NL)"
    runtime: ClassVar[str] = "llama.cpp (llama-cpp-python)"
    # mixed: the GGUF types mixed-precision chooses among by default (llama.cpp mixes any per tensor)
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=frozenset(), quant=frozenset(), mixed=("Q4_0", "Q5_0", "Q8_0")
    )
    dynamic_shapes: ClassVar[bool] = True
    ftype: str = option("F16", choices=FLOAT_TYPES, help="type of float weight matrices")
    threads: int = option(
        0, check=lambda v: v >= 0, allowed="0 (all cores) or a count", help="llama.cpp threads for --verify"
    )

    def verify_policy(self) -> VerifyPolicy | None:
        # llama.cpp rounds activations to 8 bits inside quantized matmuls, which moves logits by about 1% of their
        # range: a position whose reference top-1 leads by less than that is decided by rounding, not by the model
        # (measured on SmolLM2: Q8_0 / Q4_K agree on every position leading by >= 1%, and on 90% / 94% of all).
        return VerifyPolicy(
            "llama.cpp computes with its own kernels (fp16/int8 activations inside matmuls): criterion "
            "cosine >= 0.999 and top-1 agreement >= 0.95 on the positions whose top-1 leads by more "
            "than 1% of the logit range",
            min_cosine=0.999,
            min_top1=0.95,
            top1_margin=0.01,
        )

    def pipeline(self) -> list[Pass]:
        return [RoundFloatWeights(dtype=self.ftype)]

    def check(self, model: Model) -> list[str]:
        cfg = LLMConfig.from_model(model)
        if cfg is None:
            return [
                "the gguf target writes language models imported by the gguf or hf frontends; this model is not "
                "one (no LLM configuration)"
            ]
        problems = []
        # A GGUF file holds weights, not a graph: llama.cpp rebuilds the architecture itself. So any pass that
        # added computation (an explicit scale before a Linear, say) changed the model in a way the file
        # cannot carry; refuse it rather than drop it.
        for n in model.graph:
            if n.qualified_op in ("Mul", "Div", "Add", "Sub") and any(
                v is not None and v.is_const and (v.rank or 0) >= 1 for v in n.inputs
            ):
                problems.append(
                    f"node {n.name!r}: {n.op_type} by a constant tensor is not part of a {cfg.arch} "
                    "decoder; GGUF cannot carry it (it came from a pass such as an unfolded AWQ or "
                    "SmoothQuant scale)"
                )
        for v in model.graph.initializers.values():
            q = v.const
            if isinstance(q, QuantizedTensor) and not (q.layout or "").startswith("gguf."):
                problems.append(
                    f"weight {v.name!r}: {q!r} is not on a GGUF block grid; quantize with "
                    "quantize{gguf=TYPE} (e.g. gguf=Q4_K) so the file stores exactly what edgec computed"
                )
        return problems

    # ---- emission ------------------------------------------------------------------------------------------
    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        import gguf
        from tqdm import tqdm

        cfg = LLMConfig.from_model(model)
        assert cfg is not None  # check() refuses a model without an LLM configuration
        arch = "qwen2" if cfg.arch == "qwen2" else "llama"
        path = os.path.join(out_dir, FILE)
        w = gguf.GGUFWriter(path, arch)
        self._metadata(w, model, cfg, arch)
        types: dict[str, str] = {}
        counts: dict[str, int] = {}
        names = self._tensor_names(model, cfg)
        for name, v in tqdm(names, desc="writing GGUF", unit="tensor", leave=False, disable=None):
            c = v.const
            if cfg.arch != "qwen2" and (name.endswith("attn_q.weight") or name.endswith("attn_k.weight")):
                c = permute_rows(c, cfg.heads if "attn_q" in name else cfg.kv_heads, to_gguf=True)
            if isinstance(c, QuantizedTensor):
                try:
                    data, tname = encode(c)
                except EncodeError as e:
                    raise UnsupportedError(f"weight {name}: {e}") from None
                w.add_tensor(name, data, raw_dtype=getattr(gguf.GGMLQuantizationType, tname))
            else:
                arr = np.ascontiguousarray(np.asarray(c.numpy(), np.float32))
                tname = self.ftype if arr.ndim == 2 else "F32"
                if tname == "F16":
                    w.add_tensor(name, arr.astype(np.float16))
                elif tname == "BF16":
                    data = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.BF16)
                    w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.BF16)
                else:
                    w.add_tensor(name, arr)
            types[name] = tname
            counts[tname] = counts.get(tname, 0) + int(np.prod(v.shape))
        main = max((t for t in counts if t != "F32"), key=counts.__getitem__, default="F32")
        w.add_file_type(_FTYPE.get(main, 1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
        return Artifact(
            [FILE],
            {
                "architecture": arch,
                "tensor_types": types,
                "main_type": main,
                "has_tokenizer": GGUF_KV_KEY in model.metadata,
            },
        )

    @staticmethod
    def _tensor_names(model: Model, cfg: LLMConfig) -> list[tuple[str, object]]:
        """(GGUF name, IR value) for every weight the decoder reads, found through the graph so passes may
        have renamed the constants (e.g. ``blk.0.attn_q.weight_q``)."""
        out = []
        g = model.graph
        by_node = {n.name: n for n in g}
        for name in weight_names(cfg):
            v = _find_weight(g, by_node, name, cfg)
            if v is None:
                raise UnsupportedError(
                    f"tensor {name} is no longer in the model (a pass removed or rewrote it); "
                    "the gguf target needs the decoder's structure intact"
                )
            out.append((name, v))
        return out

    @staticmethod
    def _metadata(w, model: Model, cfg: LLMConfig, arch: str) -> None:
        import gguf

        kv = json.loads(model.metadata.get(GGUF_KV_KEY, "[]"))
        skip = {k for k, *_ in kv if k.startswith(f"{arch}.") or k.startswith("llama.") or k.startswith("qwen2.")}
        w.add_name(cfg.name or arch)
        w.add_context_length(cfg.context_length)
        w.add_embedding_length(cfg.hidden)
        w.add_block_count(cfg.layers)
        w.add_feed_forward_length(cfg.intermediate)
        w.add_head_count(cfg.heads)
        w.add_head_count_kv(cfg.kv_heads)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.rms_eps)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_vocab_size(cfg.vocab_size)
        if cfg.head_dim != cfg.hidden // cfg.heads:
            w.add_key_length(cfg.head_dim)
            w.add_value_length(cfg.head_dim)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if not kv:
            raise UnsupportedError(
                "this model carries no GGUF tokenizer metadata (it was not imported from a GGUF "
                "file); llama.cpp needs the tokenizer in the file"
            )
        for key, vtype, val, sub in kv:
            if key in skip or key == "general.name":
                continue
            t = gguf.GGUFValueType[vtype]
            w.add_key_value(key, val, t, sub_type=gguf.GGUFValueType[sub] if sub else None)

    # ---- runtime ------------------------------------------------------------------------------------------
    def logits_engine(self, out_dir: str, files, ctx: int):
        return "llama.cpp", llama_cpp_engine(os.path.join(out_dir, FILE), ctx, threads=self.threads)

    def artifact_metadata(self, out_dir: str, files) -> dict[str, str] | None:
        return {SOURCE_KEY: "gguf:" + os.path.abspath(os.path.join(out_dir, FILE))}  # the GGUF holds its tokenizer

    def chat(self, out_dir: str, files, messages: list[dict[str, str]], max_new_tokens: int) -> str | None:
        llm = load_llama(os.path.join(out_dir, FILE), n_ctx=2048)
        r = llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens, temperature=0.0, seed=0)
        return r["choices"][0]["message"]["content"]

    def generator(self, out_dir: str, files, ctx: int):
        return "llama.cpp", llama_cpp_generator(os.path.join(out_dir, FILE), ctx, threads=self.threads)

    def llm_speed(self, out_dir: str, files, prompt_tokens: int, new_tokens: int, threads: int):
        return llama_cpp_speed(os.path.join(out_dir, FILE), prompt_tokens, new_tokens, threads)

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None) -> list[np.ndarray]:
        ids = np.asarray(feeds["input_ids"])
        run = llama_cpp_engine(os.path.join(out_dir, FILE), ctx=max(int(ids.shape[1]), 8), threads=self.threads)
        return [np.stack([run(row) for row in ids])]


def _find_weight(g, by_node: dict, name: str, cfg: LLMConfig):
    """The IR value holding GGUF tensor ``name``: by the node that reads it (names are stable), else by name."""
    if name in g.initializers:
        return g.initializers[name]
    node_arg = {
        "token_embd.weight": ("embed", 0),
        "output.weight": ("output", 1),
        "output_norm.weight": ("output_norm", 1),
    }
    if name in node_arg:
        node, idx = node_arg[name]
    else:
        _, i, base, kind = name.split(".")
        idx = {"weight": 1, "bias": 2}[kind]
        node = {"attn_norm": f"blk{i}_attn_norm", "ffn_norm": f"blk{i}_ffn_norm"}.get(base, f"blk{i}_{base}")
    n = by_node.get(node)
    if n is None or len(n.inputs) <= idx or n.inputs[idx] is None or not n.inputs[idx].is_const:
        return None
    return n.inputs[idx]


@hookimpl
def edgec_register_targets(registry):
    registry.register(GGUFTarget)


@hookimpl
def edgec_register_passes(registry):
    registry.register(RoundFloatWeights)

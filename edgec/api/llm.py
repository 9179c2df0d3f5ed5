"""The format-neutral language-model schema: what a pass, check or target needs to know about a decoder-only
language model without importing the plugin that builds it.

* the decoder configuration (:class:`LLMConfig`), stored as JSON in ``model.metadata[LLM_KEY]``;
* the other model-metadata keys that frontends write and passes, checks and targets read;
* the weight-naming schema: every weight the decoder reads, in GGUF naming (``token_embd.weight``,
  ``blk.N.attn_q.weight`` ...), its shape, and the Q/K row orders of Hugging Face and GGUF files.

The decoder graph builder and the GGUF / safetensors readers live in the LLM plugin (``edgec.plugins.llm``)
and import this schema; the ``gguf`` target writes files from it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..errors import UnsupportedError
from ..ir import Model, QuantizedTensor, Tensor

# ------------------------------------------------------------------------------------------ metadata keys
LLM_KEY = "edgec.llm"  # model.metadata key holding the LLMConfig as JSON
SOURCE_KEY = "edgec.llm.source"  # "gguf:<path>" or "hf:<folder>": where the tokenizer comes from
GGUF_KV_KEY = "edgec.gguf.kv"  # model.metadata key: the source file's key/value metadata, for write-back

# ------------------------------------------------------------------------------------------ configuration
ARCHS = ("llama", "mistral", "qwen2")
MAX_DIM = 1 << 22  # no dimension of a real decoder (vocab, hidden, context, ...) comes near 4M


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    arch: str  # "llama" | "mistral" | "qwen2" (GGUF files of Mistral models say "llama")
    vocab_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    context_length: int = 2048
    tied_embeddings: bool = False
    qkv_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    name: str = ""

    def check(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"architecture {self.arch!r} is not supported (supported: {', '.join(ARCHS)})")
        if self.heads % max(self.kv_heads, 1):
            problems.append(f"{self.heads} attention heads are not a multiple of {self.kv_heads} KV heads")
        if self.head_dim % 2:
            problems.append(f"head dimension {self.head_dim} is odd; rotary embeddings need it even")
        for f in ("vocab_size", "hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "context_length"):
            if getattr(self, f) <= 0:
                problems.append(f"{f} must be positive, got {getattr(self, f)}")
            elif getattr(self, f) > MAX_DIM:  # a corrupt header must not make edgec allocate terabytes
                problems.append(f"{f} = {getattr(self, f)} is beyond any real model (limit {MAX_DIM})")
        if problems:
            raise UnsupportedError("cannot build this language model:\n  " + "\n  ".join(problems))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_model(cls, model: Model) -> "LLMConfig | None":
        raw = model.metadata.get(LLM_KEY)
        return cls(**json.loads(raw)) if raw else None


# ------------------------------------------------------------------------------------------ weight names
def first_tokens(model: Model, samples: list[dict[str, np.ndarray]], seq: int) -> list[dict[str, np.ndarray]]:
    """A language model's calibration samples cut to their first ``seq`` tokens (every input of shape ``(batch,
    seq)`` with a symbolic token axis); another model's samples, or ``seq=0``, are returned as they are. Used where
    a pass's cost is linear in the tokens it reads (sensitivities, qat)."""
    if not seq or LLMConfig.from_model(model) is None:
        return samples
    axes = {v.name for v in model.graph.inputs if v.shape and len(v.shape) == 2 and isinstance(v.shape[1], str)}
    return [{k: (a[:, :seq] if k in axes and np.ndim(a) == 2 else a) for k, a in s.items()} for s in samples]


def weight_names(cfg: LLMConfig) -> list[str]:
    """Every weight the decoder reads, in GGUF naming."""
    names = ["token_embd.weight"]
    for i in range(cfg.layers):
        p = f"blk.{i}."
        names += [
            p + "attn_norm.weight",
            p + "attn_q.weight",
            p + "attn_k.weight",
            p + "attn_v.weight",
            p + "attn_output.weight",
            p + "ffn_norm.weight",
            p + "ffn_gate.weight",
            p + "ffn_up.weight",
            p + "ffn_down.weight",
        ]
        if cfg.qkv_bias:
            names += [p + "attn_q.bias", p + "attn_k.bias", p + "attn_v.bias"]
    names.append("output_norm.weight")
    if not cfg.tied_embeddings:
        names.append("output.weight")
    return names


def expected_shape(cfg: LLMConfig, name: str) -> tuple[int, ...]:
    h, hd = cfg.hidden, cfg.head_dim
    last = name.split(".", 2)[-1] if name.startswith("blk.") else name
    return {
        "token_embd.weight": (cfg.vocab_size, h),
        "output.weight": (cfg.vocab_size, h),
        "output_norm.weight": (h,),
        "attn_norm.weight": (h,),
        "ffn_norm.weight": (h,),
        "attn_q.weight": (cfg.heads * hd, h),
        "attn_k.weight": (cfg.kv_heads * hd, h),
        "attn_v.weight": (cfg.kv_heads * hd, h),
        "attn_output.weight": (h, cfg.heads * hd),
        "attn_q.bias": (cfg.heads * hd,),
        "attn_k.bias": (cfg.kv_heads * hd,),
        "attn_v.bias": (cfg.kv_heads * hd,),
        "ffn_gate.weight": (cfg.intermediate, h),
        "ffn_up.weight": (cfg.intermediate, h),
        "ffn_down.weight": (h, cfg.intermediate),
    }[last]


# --------------------------------------------------------------------------------------- Q/K row layouts
def _rows_perm(rows: int, n_head: int, to_gguf: bool) -> np.ndarray:
    """Row order turning Hugging Face's rotate-half Q/K layout into GGUF's interleaved one (or back)."""
    hd = rows // n_head
    idx = np.arange(rows)
    if to_gguf:  # llama.cpp convert: reshape(n, 2, hd/2).swapaxes(1, 2)
        return idx.reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(-1)
    return idx.reshape(n_head, hd // 2, 2).swapaxes(1, 2).reshape(-1)


def permute_rows(t: Tensor | QuantizedTensor | np.ndarray, n_head: int, to_gguf: bool) -> Tensor | QuantizedTensor:
    """Reorder Q/K projection rows between layouts; exact for quantized tensors (codes and per-row
    parameters move together)."""
    perm = _rows_perm(t.shape[0], n_head, to_gguf)
    if isinstance(t, QuantizedTensor):
        return t.take_rows(perm)
    arr = t.numpy() if isinstance(t, Tensor) else np.asarray(t)
    return Tensor(np.ascontiguousarray(arr[perm]))


__all__ = [
    "ARCHS",
    "GGUF_KV_KEY",
    "LLMConfig",
    "LLM_KEY",
    "MAX_DIM",
    "SOURCE_KEY",
    "expected_shape",
    "permute_rows",
    "weight_names",
]

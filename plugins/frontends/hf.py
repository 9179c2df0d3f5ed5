"""The Hugging Face frontend: a llama / mistral / qwen2 folder (config.json + safetensors) as edgec's decoder IR."""

from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np


from ...api.llm import SOURCE_KEY, LLMConfig
from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model, QuantizedTensor, Tensor
from . import hf_quant
from .decoder import build_decoder


_HF_ARCH = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
_HF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def hf_config(folder: str) -> LLMConfig:
    """The decoder configuration of a Hugging Face folder (malformed values are a BadInputError)."""
    return _configs(folder)[0]


def _configs(folder: str) -> tuple[LLMConfig, dict]:
    """The decoder configuration and config.json as read (for its quantization_config)."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            c = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise BadInputError(f"{path}: cannot read the model configuration: {e}") from None
    if not isinstance(c, dict):
        raise BadInputError(f"{path}: the configuration is not a JSON object")
    raw = dict(c)  # _hf_config adjusts a few values in place
    try:
        cfg = _hf_config(folder, path, c)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as e:
        raise BadInputError(f"{path}: malformed configuration: {type(e).__name__}: {e}") from None
    cfg.check()
    return cfg, raw


def _hf_config(folder: str, path: str, c: dict) -> LLMConfig:
    archs = c.get("architectures") or []
    arch = next((_HF_ARCH[a] for a in archs if a in _HF_ARCH), None) or {
        "llama": "llama",
        "mistral": "mistral",
        "qwen2": "qwen2",
    }.get(c.get("model_type", ""))
    if arch is None:
        raise UnsupportedError(
            f"{path}: architecture {archs or c.get('model_type')} is not supported (supported: {', '.join(_HF_ARCH)})"
        )
    problems = []
    rp = c.get("rope_parameters") or {}  # transformers >= 5 keeps rope_theta and the scaling type here
    rope_theta = float(c.get("rope_theta") or rp.get("rope_theta") or 10000.0)
    for rs in (c.get("rope_scaling"), rp):
        if rs and (rs.get("rope_type") or rs.get("type")) not in (None, "default"):
            problems.append(f"rope scaling {rs}")
    if c.get("mlp_bias"):
        problems.append("MLP biases (mlp_bias=true)")
    if c.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {c.get('hidden_act')!r} (only silu)")
    if arch == "mistral" and c.get("sliding_window") and c["sliding_window"] < c.get("max_position_embeddings", 0):
        # A sliding window shorter than the evaluated context changes attention; edgec uses full causal
        # attention and limits the context length to the window instead.
        c["max_position_embeddings"] = c["sliding_window"]
    if problems:
        raise UnsupportedError(f"{path}: not supported yet: " + "; ".join(problems))
    try:
        hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        return LLMConfig(
            arch=arch,
            vocab_size=int(c["vocab_size"]),
            hidden=hidden,
            intermediate=int(c["intermediate_size"]),
            layers=int(c["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or hidden // heads),
            rope_theta=rope_theta,
            rms_eps=float(c.get("rms_norm_eps", 1e-6)),
            context_length=int(c.get("max_position_embeddings", 2048)),
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=bool(c.get("attention_bias", arch == "qwen2")),
            bos_token_id=c.get("bos_token_id"),
            eos_token_id=c.get("eos_token_id") if not isinstance(c.get("eos_token_id"), list) else c["eos_token_id"][0],
            name=os.path.basename(os.path.abspath(folder)),
        )
    except KeyError as e:
        raise BadInputError(f"{path}: required key {e.args[0]!r} is missing") from None


def gguf_name(hf: str) -> str | None:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    if hf.startswith("model.layers."):
        _, _, i, rest = hf.split(".", 3)
        base, _, kind = rest.rpartition(".")
        if base in _HF_NAMES:
            return f"blk.{i}.{_HF_NAMES[base]}.{kind}"
    return None


class HFFrontend(Frontend):
    """A Hugging Face style folder: ``config.json`` + ``*.safetensors`` (+ tokenizer files), read offline."""

    name: ClassVar[str] = "hf"
    summary: ClassVar[str] = "Hugging Face folders (config.json + safetensors): Llama, Mistral, Qwen2"
    suffixes: ClassVar[tuple[str, ...]] = ()

    def accepts(self, path: str) -> bool:
        return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))

    def load(self, path: str) -> Model:
        from tqdm import tqdm

        from . import safetensors_io

        for fn in sorted(os.listdir(path)):  # a FIFO or a device named config.json would block a read forever
            p = os.path.join(path, fn)
            if os.path.exists(p) and not (os.path.isfile(p) or os.path.isdir(p)):
                raise BadInputError(f"{p} is not a regular file; a model folder holds files")
        cfg, config_json = _configs(path)
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise BadInputError(
                f"{path} has no *.safetensors files (pickled .bin checkpoints are not read: "
                "they can run code; convert them to safetensors)"
            )
        # Every header is read and checked, and the total checked against the memory budget, before any tensor.
        headers = {os.path.join(path, fn): safetensors_io.read_header(os.path.join(path, fn)) for fn in files}
        for p, entries in headers.items():
            for key in entries:
                if gguf_name(key) is None and not key.endswith("rotary_emb.inv_freq"):
                    raise UnsupportedError(
                        f"{os.path.basename(p)}: tensor {key!r} has no place in a {cfg.arch} decoder"
                    )
        safetensors_io.check_sizes(headers, keep=lambda k: gguf_name(k) is not None)
        qcfg = hf_quant.quant_config(config_json, os.path.join(path, "config.json"))
        weights: dict[str, Tensor | QuantizedTensor] = {}
        packed: dict[str, dict[str, np.ndarray]] = {}  # a quantized Linear's parts, by its weight's name
        sources: dict[str, str] = {}  # that Linear's name in the checkpoint
        for p, entries in headers.items():
            for key, e in tqdm(
                list(entries.items()), desc=f"reading {os.path.basename(p)}", unit="tensor", leave=False, disable=None
            ):
                name = gguf_name(key)
                if name is None:
                    continue
                base, _, kind = name.rpartition(".")
                if kind in hf_quant.PACKED:
                    if qcfg is None:
                        raise BadInputError(
                            f"{os.path.basename(p)}: tensor {key!r} is a packed quantized weight, but config.json "
                            "has no quantization_config saying how it is packed"
                        )
                    raw = safetensors_io.load_raw(p, e) if kind != "scales" else safetensors_io.load(p, e)
                    packed.setdefault(base + ".weight", {})[kind] = raw
                    sources[base + ".weight"] = key.rpartition(".")[0]  # errors name the checkpoint's tensors
                else:
                    weights[name] = Tensor(safetensors_io.load(p, e))
        perms: dict[str, np.ndarray] = {}
        for name, parts in packed.items():
            assert qcfg is not None  # packed parts are only collected with a quantization_config
            if qcfg.method == "gptq":
                weights[name], perm = hf_quant.gptq_tensor(sources[name], parts, qcfg)
                if perm is not None:
                    perms[name] = perm
            else:
                weights[name] = hf_quant.awq_tensor(sources[name], parts, qcfg)
        if cfg.tied_embeddings:
            weights.pop("output.weight", None)
        elif "output.weight" not in weights and "token_embd.weight" in weights:
            cfg = LLMConfig(**{**cfg.__dict__, "tied_embeddings": True})
        return build_decoder(cfg, weights, {SOURCE_KEY: "hf:" + os.path.abspath(path)}, perms)

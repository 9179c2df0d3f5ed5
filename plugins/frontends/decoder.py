"""A llama-family decoder-only transformer in edgec IR.

One builder serves every LLM frontend (GGUF, Hugging Face folders): token embedding, RMSNorm, rotary
position embeddings (rotate-half form, Hugging Face's row layout of the Q/K projections), grouped-query
attention with a causal mask, SwiGLU MLP, tied or separate output head. Weights are named the way GGUF
names them (``token_embd.weight``, ``blk.N.attn_q.weight`` ...), so targets and reports speak one naming;
the configuration and that naming are the plugin API's language-model schema (:mod:`edgec.api.llm`).

The graph takes ``input_ids [batch, seq]`` (int64) and returns ``logits [batch, seq, vocab]`` for every
position: what perplexity evaluation and calibration need. Sequence length is free up to the context
length (the rotary tables have that many rows).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...api.llm import LLM_KEY, LLMConfig, expected_shape, weight_names
from ...errors import UnsupportedError
from ...ir import DType, Graph, Model, QuantizedTensor, Tensor, Value


def rope_tables(cfg: LLMConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin ``[context, head_dim]`` in the rotate-half layout (each frequency twice)."""
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    ang = np.outer(np.arange(cfg.context_length, dtype=np.float64), inv)
    ang = np.concatenate([ang, ang], axis=1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def build_decoder(
    cfg: LLMConfig,
    weights: Mapping[str, Tensor | QuantizedTensor | np.ndarray],
    metadata: dict[str, str] | None = None,
    perms: Mapping[str, np.ndarray] | None = None,
) -> Model:
    """The decoder graph over ``weights`` (GGUF names, Hugging Face Q/K row layout). ``perms``: a Linear weight
    whose input columns are stored in another order (a GPTQ act-order checkpoint's, reordered so that its groups
    are contiguous) reads its input through a Gather of that order."""
    cfg.check()
    problems = []
    for n in weight_names(cfg):
        if n not in weights:
            problems.append(f"missing tensor {n}")
            continue
        want = expected_shape(cfg, n)
        got = tuple(weights[n].shape)
        if got != want:
            problems.append(f"tensor {n} has shape {list(got)}, the configuration implies {list(want)}")
    if problems:
        raise UnsupportedError("the weights do not match the model configuration:\n  " + "\n  ".join(problems[:20]))

    g = Graph(cfg.name or cfg.arch)
    ids = g.add_input("input_ids", DType.INT64, ("batch", "seq"))
    ids.meta["vocab_size"] = cfg.vocab_size
    W = {n: g.add_const(n, weights[n]) for n in weight_names(cfg)}

    def c(name: str, arr) -> Value:
        return g.add_const(g.unique_name(name), np.asarray(arr))

    def op(o: str, ins, name: str = "", domain: str = "", **attrs) -> Value:
        return g.op(o, ins, attrs or None, domain=domain, name=g.unique_name(name) if name else "").output

    hd, nh, nkv = cfg.head_dim, cfg.heads, cfg.kv_heads
    half = hd // 2
    cos_t, sin_t = rope_tables(cfg)
    cos_c, sin_c = c("rope_cos", cos_t), c("rope_sin", sin_t)
    # Positions 0..seq-1, the rotary rows for them and the additive causal mask [seq, seq].
    seq = op("Gather", [op("Shape", [ids], "ids_shape"), c("one_i64", np.array(1, np.int64))], "seq_len", axis=0)
    pos = op("Range", [c("zero_i64", np.array(0, np.int64)), seq, c("step_i64", np.array(1, np.int64))], "positions")
    cos = op("Gather", [cos_c, pos], "cos", axis=0)
    sin = op("Gather", [sin_c, pos], "sin", axis=0)
    later = op(
        "Less",
        [
            op("Unsqueeze", [pos, c("ax1", np.array([1], np.int64))]),
            op("Unsqueeze", [pos, c("ax0", np.array([0], np.int64))]),
        ],
        "causal",
    )
    mask = op(
        "Where",
        [later, c("neg_inf", np.array(-np.inf, np.float32)), c("zero_f", np.array(0.0, np.float32))],
        "causal_mask",
    )
    heads_shape = {n: c(f"shape_heads{n}", np.array([0, 0, n, hd], np.int64)) for n in {nh, nkv}}
    merge_shape = c("shape_merge", np.array([0, 0, nh * hd], np.int64))
    lo_ends = c("rope_half", np.array([half], np.int64))
    zero1 = c("rope_zero", np.array([0], np.int64))
    end1 = c("rope_end", np.array([hd], np.int64))
    last_axis = c("rope_axis", np.array([-1], np.int64))
    rep = nh // nkv
    rep_shape = c("gqa_expand", np.array([1, 1, rep, 1, 1], np.int64))
    gqa_shape = c("gqa_merge", np.array([0, nh, -1, hd], np.int64))
    ax2 = c("ax2", np.array([2], np.int64))

    def rope(x: Value, tag: str) -> Value:
        x1 = op("Slice", [x, zero1, lo_ends, last_axis], f"{tag}_x1")
        x2 = op("Slice", [x, lo_ends, end1, last_axis], f"{tag}_x2")
        rot = op("Concat", [op("Neg", [x2], f"{tag}_neg"), x1], f"{tag}_rot", axis=-1)
        return op("Add", [op("Mul", [x, cos], f"{tag}_cos"), op("Mul", [rot, sin], f"{tag}_sin")], f"{tag}_rope")

    def linear(x: Value, w: str, tag: str, bias: str | None = None) -> Value:
        if perms and w in perms:
            x = op("Gather", [x, c(f"{tag}_perm", np.asarray(perms[w], np.int64))], f"{tag}_in_order", axis=-1)
        ins = [x, W[w]] + ([W[bias]] if bias else [])
        return op("Linear", ins, tag, domain="edgec")

    x = op("Gather", [W["token_embd.weight"], ids], "embed", axis=0)
    for i in range(cfg.layers):
        p = f"blk.{i}."
        t = f"blk{i}"
        h = op("RMSNorm", [x, W[p + "attn_norm.weight"]], f"{t}_attn_norm", domain="edgec", epsilon=cfg.rms_eps)
        qkv = []
        for proj, n_heads in (("attn_q", nh), ("attn_k", nkv), ("attn_v", nkv)):
            y = linear(h, p + proj + ".weight", f"{t}_{proj}", p + proj + ".bias" if cfg.qkv_bias else None)
            y = op(
                "Transpose",
                [op("Reshape", [y, heads_shape[n_heads]], f"{t}_{proj}_split")],
                f"{t}_{proj}_heads",
                perm=[0, 2, 1, 3],
            )
            qkv.append(y)
        q, k, v = qkv
        q, k = rope(q, f"{t}_q"), rope(k, f"{t}_k")
        if rep > 1:
            k, v = (
                op("Reshape", [op("Expand", [op("Unsqueeze", [y, ax2]), rep_shape]), gqa_shape], f"{t}_{tag}_gqa")
                for y, tag in ((k, "k"), (v, "v"))
            )
        a = op("Attention", [q, k, v, mask], f"{t}_attn", domain="edgec", scale=float(1.0 / np.sqrt(hd)))
        a = op("Reshape", [op("Transpose", [a], f"{t}_attn_t", perm=[0, 2, 1, 3]), merge_shape], f"{t}_attn_merge")
        x = op("Add", [x, linear(a, p + "attn_output.weight", f"{t}_attn_output")], f"{t}_attn_residual")
        h = op("RMSNorm", [x, W[p + "ffn_norm.weight"]], f"{t}_ffn_norm", domain="edgec", epsilon=cfg.rms_eps)
        gate = linear(h, p + "ffn_gate.weight", f"{t}_ffn_gate")
        up = linear(h, p + "ffn_up.weight", f"{t}_ffn_up")
        act = op("Mul", [op("Mul", [gate, op("Sigmoid", [gate], f"{t}_sigmoid")], f"{t}_silu"), up], f"{t}_swiglu")
        x = op("Add", [x, linear(act, p + "ffn_down.weight", f"{t}_ffn_down")], f"{t}_ffn_residual")
    h = op("RMSNorm", [x, W["output_norm.weight"]], "output_norm", domain="edgec", epsilon=cfg.rms_eps)
    head = W["token_embd.weight"] if cfg.tied_embeddings else W["output.weight"]
    logits = op("Linear", [h, head], "output", domain="edgec")
    g.rename(logits, "logits")
    logits.dtype, logits.shape = DType.FLOAT32, ("batch", "seq", cfg.vocab_size)
    g.outputs.append(logits)
    meta = dict(metadata or {})
    meta[LLM_KEY] = cfg.to_json()
    return Model(g, opset_imports={"": 18, "edgec": 1}, metadata=meta)

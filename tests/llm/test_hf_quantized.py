"""Pre-quantized Hugging Face checkpoints (GPTQ, AWQ): written here from the formats' definitions (AutoGPTQ's and
AutoAWQ's packing), read by edgec into the grid they define; the model matches transformers running the same
dequantized weights, and the codes are the checkpoint's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from edgec.errors import BadInputError, UnsupportedError
from edgec.ir import QuantizedTensor, ReferenceExecutor
from edgec.plugins.frontends.hf import HFFrontend
from tests.llm.test_llm_frontends import _hf_model

GROUP = 32
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def _grid(w_in_out: np.ndarray, g_idx: np.ndarray):
    """Asymmetric 4-bit codes of ``[K, N]`` per group (fp16 scales, zeros 1..15: AutoGPTQ's v1 format cannot
    store a zero of 0), and the dequantized ``[K, N]`` float32 values."""
    k, n = w_in_out.shape
    groups = k // GROUP
    scales = np.zeros((groups, n), np.float16)
    zeros = np.zeros((groups, n), np.int64)
    for g in range(groups):
        rows = w_in_out[g_idx == g]
        lo, hi = np.minimum(rows.min(0), 0), np.maximum(rows.max(0), 0)
        s = np.maximum((hi - lo) / 15, 1e-4).astype(np.float16)
        scales[g] = s
        zeros[g] = np.clip(np.rint(-lo / s.astype(np.float32)), 1, 15)
    s32 = scales.astype(np.float32)[g_idx]
    codes = np.clip(np.rint(w_in_out / s32) + zeros[g_idx], 0, 15).astype(np.int64)
    return codes, zeros, scales, ((codes - zeros[g_idx]) * s32).astype(np.float32)


def _pack_rows(codes: np.ndarray) -> np.ndarray:
    """AutoGPTQ: each int32 of qweight holds 8 consecutive input rows, the first in the lowest bits."""
    k, n = codes.shape
    c = codes.reshape(k // 8, 8, n).astype(np.uint32)
    return sum(c[:, s, :] << np.uint32(4 * s) for s in range(8)).astype(np.uint32).view(np.int32)


def _pack_cols(codes: np.ndarray, order=range(8)) -> np.ndarray:
    """8 output columns per int32 (slot s holds column order[s] of each 8)."""
    r, n = codes.shape
    c = codes.reshape(r, n // 8, 8).astype(np.uint32)
    return sum(c[:, :, order[s]] << np.uint32(4 * s) for s in range(8)).astype(np.uint32).view(np.int32)


def _checkpoint(tmp_path, method: str, act_order: bool = False):
    """A tiny Llama saved twice: quantized (method's format) and as the float weights it dequantizes to."""
    m = _hf_model("llama")
    sd = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    rng = np.random.default_rng(1)
    quant, floats, want_codes = {}, dict(sd), {}
    for key in [k for k in sd if k.endswith("proj.weight")]:
        w = sd[key].T.copy()  # [K, N]
        k = w.shape[0]
        g_idx = (rng.permutation(k) if act_order else np.arange(k)) // GROUP
        codes, zeros, scales, deq = _grid(w, g_idx.astype(np.int64))
        base = key[: -len(".weight")]
        floats[key] = deq.T.copy()
        want_codes[key] = (codes, g_idx)
        if method == "gptq":
            quant[base + ".qweight"] = _pack_rows(codes)
            quant[base + ".qzeros"] = _pack_cols(zeros - 1)  # v1: stored one less
            quant[base + ".g_idx"] = g_idx.astype(np.int32)
        else:
            quant[base + ".qweight"] = _pack_cols(codes, AWQ_ORDER)
            quant[base + ".qzeros"] = _pack_cols(zeros, AWQ_ORDER)
        quant[base + ".scales"] = scales
    for key, v in sd.items():
        if not key.endswith("proj.weight"):
            quant[key] = v
    qdir, fdir = tmp_path / method, tmp_path / "float"
    m.save_pretrained(fdir, safe_serialization=True)
    m.load_state_dict({k: torch.tensor(v) for k, v in floats.items()})
    m.save_pretrained(fdir, safe_serialization=True)
    m.save_pretrained(qdir, safe_serialization=True)
    for f in qdir.glob("*.safetensors"):
        f.unlink()
    save_file(quant, str(qdir / "model.safetensors"))
    cfg = json.loads((qdir / "config.json").read_text())
    cfg["quantization_config"] = (
        {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": act_order, "sym": False}
        if method == "gptq"
        else {"quant_method": "awq", "bits": 4, "group_size": GROUP, "version": "gemm", "zero_point": True}
    )
    (qdir / "config.json").write_text(json.dumps(cfg))
    return m, qdir, want_codes


@pytest.mark.parametrize("method, act_order", [("gptq", False), ("gptq", True), ("awq", False)])
def test_gptq_and_awq_checkpoints_keep_their_grid(method, act_order, tmp_path):
    m, qdir, want_codes = _checkpoint(tmp_path, method, act_order)
    model = HFFrontend().load(str(qdir))
    consts = {v.name: v.const for v in model.graph.initializers.values()}
    names = {
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_output",
        "gate_proj": "ffn_gate",
        "up_proj": "ffn_up",
        "down_proj": "ffn_down",
    }
    for key, (codes, g_idx) in want_codes.items():
        layer, proj = key.split(".")[2], key.split(".")[-2]
        q = consts[f"blk.{layer}.{names[proj]}.weight"]
        assert isinstance(q, QuantizedTensor) and (q.bits, q.scheme, q.group_size) == (4, "asymmetric", GROUP)
        order = np.argsort(g_idx, kind="stable")  # act order: the input columns grouped
        assert np.array_equal(q.codes, codes[order].T)
    gathers = [n for n in model.graph if n.op_type == "Gather" and n.name.endswith("_in_order")]
    assert len(gathers) == (14 if act_order else 0)
    ids = np.random.default_rng(0).integers(0, 320, (2, 11)).astype(np.int64)
    with torch.no_grad():
        want = m(torch.tensor(ids)).logits.numpy()  # transformers on the dequantized float weights
    got = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_unreadable_quantization_configs_are_named(tmp_path):
    _, qdir, _ = _checkpoint(tmp_path, "gptq")
    cfg = json.loads((qdir / "config.json").read_text())
    for qc, err, msg in (
        ({"quant_method": "bitsandbytes"}, UnsupportedError, "quant_method 'bitsandbytes' is not read"),
        ({"quant_method": "gptq", "bits": 3, "group_size": 32}, UnsupportedError, "bits=3 is not read"),
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 64},
            BadInputError,
            "do not fit 4-bit codes in groups of 64",
        ),
        ({"quant_method": "awq", "bits": 4, "version": "gemv"}, UnsupportedError, "AWQ version 'gemv'"),
    ):
        (qdir / "config.json").write_text(json.dumps({**cfg, "quantization_config": qc}))
        with pytest.raises(err, match=msg):
            HFFrontend().load(str(qdir))
    (qdir / "config.json").write_text(json.dumps(cfg))
    from safetensors.numpy import load_file

    tensors = load_file(str(qdir / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj"
    for change, msg in (
        (lambda t: t.pop(q + ".scales"), f"quantized weight '{q}': the checkpoint has no {q}.scales"),
        (lambda t: t.__setitem__(q + ".g_idx", np.zeros(64, np.int32)), "g_idx does not put 32 inputs in every group"),
        (lambda t: t.__setitem__(q + ".g_idx", np.zeros(7, np.int32)), "g_idx of shape \\[7\\] does not name a group"),
        (lambda t: t.__setitem__(q + ".qweight", t[q + ".qweight"][0]), "qweight, qzeros and scales must be 2-D"),
    ):
        broken = dict(tensors)
        change(broken)
        save_file(broken, str(qdir / "model.safetensors"))
        with pytest.raises(BadInputError, match=msg):
            HFFrontend().load(str(qdir))
    save_file(tensors, str(qdir / "model.safetensors"))
    del cfg["quantization_config"]
    (qdir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadInputError, match="packed quantized weight, but config.json has no quantization_config"):
        HFFrontend().load(str(qdir))


@pytest.mark.slow
def test_an_act_order_gptq_checkpoint_runs_on_openvino(tmp_path):
    """The imported grid on a runtime: compiled to openvino (its 4-bit weights kept), the artifact's logits equal
    the reference executor's on the imported model."""
    from edgec.compiler import compile as edgec_compile
    from edgec.targets.openvino import OpenVINOTarget

    _, qdir, _ = _checkpoint(tmp_path, "gptq", act_order=True)
    out = tmp_path / "ov"
    res = edgec_compile(str(qdir), "openvino", "", str(out), use_cache=False)
    encodings = res.manifest["target"]["weight_encodings"]
    assert sum(str(e).startswith("u4") for e in encodings.values()) == 14, encodings
    ids = np.random.default_rng(2).integers(0, 320, (1, 9)).astype(np.int64)
    got = OpenVINOTarget().run_artifact(str(out), {"input_ids": ids}, ["input_ids"])[0]
    want = ReferenceExecutor(HFFrontend().load(str(qdir))).run({"input_ids": ids})["logits"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

"""GGUF target: every type is written bit-exactly from the IR and runs in llama.cpp."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgec.api.gguf import TYPES, quantize_matrix
from edgec.api.llm import LLMConfig, permute_rows
from edgec.ir import QuantizedTensor
from edgec.ir.passes import PassContext, PassManager
from edgec.plugins.frontends.gguf import GGUFFrontend
from edgec.plugins.quantize.quantize import Quantize
from edgec.targets.gguf import FILE, GGUFTarget, RoundFloatWeights
from edgec.targets.gguf.encode import EncodeError, encode

ALL_TYPES = ["F32", "F16", "BF16", *TYPES]


@pytest.mark.parametrize("name", list(TYPES))
def test_encoding_is_bit_exact(name):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((6, 512)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    w[0, :48] = 0.0  # all-zero blocks
    w[1, 100] = 40.0  # an outlier
    for method in ("rtn", "mse"):
        q = quantize_matrix(w, TYPES[name], method)
        assert q.validate() == []
        data, tname = encode(q)
        assert tname == name
        back = gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, name)).reshape(w.shape)
        assert np.array_equal(back.view(np.uint32), q.dequantize().view(np.uint32))


def test_encoder_refuses_off_grid_tensors():
    rng = np.random.default_rng(0)
    q = quantize_matrix(rng.standard_normal((2, 64)).astype(np.float32), TYPES["Q4_0"])
    bad = QuantizedTensor(
        codes=q.codes,
        bits=4,
        scheme="symmetric",
        scales=q.scales * np.float32(1.0001),
        axis=0,
        group_size=32,
        group_axis=1,
        layout="gguf.Q4_0",
    )
    with pytest.raises(EncodeError, match="fp16"):
        encode(bad)


def _quantized_model(path: str, name: str):
    model = GGUFFrontend().load(path)
    passes = (
        [RoundFloatWeights(dtype=name)]
        if name in ("F32", "F16", "BF16")
        else [Quantize(gguf=name, method="rtn", embedding_bits=8, head_bits=8)]
    )
    PassManager(passes).run(model, PassContext())
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_TYPES)
def test_each_type_writes_exactly_and_runs_in_llama_cpp(name, tiny_gguf, tmp_path):
    from edgec.ir import ReferenceExecutor

    model = _quantized_model(tiny_gguf, name)
    target = GGUFTarget(ftype=name if name in ("F32", "F16", "BF16") else "F16")
    assert target.check(model) == []
    art = target.emit(model, str(tmp_path), PassContext())
    cfg = LLMConfig.from_model(model)
    if name in TYPES:
        assert art.manifest["tensor_types"]["blk.0.attn_q.weight"] == name
        assert art.manifest["tensor_types"]["token_embd.weight"] == "Q8_0"
    # 1. The file dequantizes to the IR's weights bit for bit.
    reader = gguf.GGUFReader(str(tmp_path / FILE))
    by_name = {t.name: t for t in reader.tensors}
    for gname, v in GGUFTarget._tensor_names(model, cfg):
        t = by_name[gname]
        shape = tuple(int(d) for d in reversed(list(t.shape)))
        got = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        if gname.endswith(("attn_q.weight", "attn_k.weight")):
            got = permute_rows(got, cfg.heads if "attn_q" in gname else cfg.kv_heads, to_gguf=False).numpy()
        want = np.asarray(v.numpy(), np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), gname
    # 2. llama.cpp loads it; its logits match the reference executor's on a short prompt.
    ids = np.array([[1, 504, 3575, 282, 4649, 314, 253, 216, 1056, 30, 421, 1032]], np.int64)
    got = target.run_artifact(str(tmp_path), {"input_ids": ids})[0]
    ref = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    # llama.cpp multiplies with fp16/int8 activations, so only near-equality is expected (top-1 is not
    # checked: a random model's logits have near ties; the SmolLM2 tests check it on a real model).
    assert cos >= 0.999 and rel <= 0.05, (name, cos, rel)


@pytest.mark.slow
def test_target_refuses_non_gguf_quantization(tiny_gguf):
    model = GGUFFrontend().load(tiny_gguf)
    PassManager([Quantize(bits=4, group=32, include="attn_q")]).run(model, PassContext())
    problems = GGUFTarget().check(model)
    assert problems and "quantize{gguf=TYPE}" in problems[0]


def test_k_quant_fallback_matches_llama_cpp_rule():
    from edgec.api.gguf import resolve

    assert resolve("Q4_K", 512) == ("Q4_K", "")
    assert resolve("Q4_K", 576)[0] == "Q5_0"
    assert resolve("Q3_K", 576)[0] == "IQ4_NL"
    assert resolve("Q6_K", 576)[0] == "Q8_0"
    assert resolve("Q4_0", 40)[0] is None


@pytest.mark.slow
def test_qwen2_decoder_runs_in_llama_cpp(tmp_path, smol_kv):
    """A Hugging Face Qwen2 (q/k/v biases, rotate-half rope kept as is) written as GGUF architecture qwen2:
    llama.cpp's logits match transformers'. The tokenizer metadata is SmolLM2's (same vocabulary size)."""
    import torch
    import transformers as tf
    from edgec.plugins.frontends.hf import HFFrontend
    from edgec.api.llm import GGUF_KV_KEY

    torch.manual_seed(0)
    hm = tf.Qwen2ForCausalLM(
        tf.Qwen2Config(
            vocab_size=49152,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
    ).eval()
    with torch.no_grad():
        for n, p in hm.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
            elif "embed" in n:
                p.normal_(0, 1.0)
    hm.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = HFFrontend().load(str(tmp_path / "hf"))
    model.metadata[GGUF_KV_KEY] = smol_kv
    PassManager([RoundFloatWeights(dtype="F32")]).run(model, PassContext())
    target = GGUFTarget(ftype="F32")
    art = target.emit(model, str(tmp_path), PassContext())
    assert art.manifest["architecture"] == "qwen2"
    ids = np.array([[1, 504, 3575, 282, 4649, 314, 253, 216]], np.int64)
    got = target.run_artifact(str(tmp_path), {"input_ids": ids})[0]
    with torch.no_grad():
        want = hm(torch.tensor(ids)).logits.numpy()
    cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos >= 0.999 and np.abs(got - want).max() <= 0.02 * np.abs(want).max(), cos


@pytest.mark.slow
def test_target_refuses_graph_rewrites_a_gguf_file_cannot_carry(tiny_gguf):
    """An explicit per-channel scale in front of a Linear (what AWQ does where it cannot fold) would be
    silently lost in a GGUF file: the target refuses it."""
    from edgec.plugins.quantize.scaling import apply_input_scale

    model = GGUFFrontend().load(tiny_gguf)
    node = model.graph.node("blk0_attn_output")
    apply_input_scale(model, node.inputs[0], [node], np.full(256, 2.0, np.float32))
    problems = GGUFTarget().check(model)
    assert problems and "GGUF cannot carry it" in problems[0]


@pytest.mark.slow
def test_awq_in_gguf_mode_folds_every_scale(tiny_gguf):
    """With gguf=, AWQ folds into norms and into the up projection of the gated MLP, never adds nodes."""
    from edgec.calibration import load_calibration
    import os

    text = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "text", "eval.txt")
    model = GGUFFrontend().load(tiny_gguf)
    n_nodes = len(model.graph)
    cal = load_calibration(text, model, max_samples=2, seq_len=64)
    PassManager([Quantize(gguf="Q4_0", method="awq")]).run(model, PassContext(calibration=cal))
    assert len(model.graph) == n_nodes and GGUFTarget().check(model) == []
    # The down projection's input scale went into ffn_up's rows (its weight is no longer the original).
    assert "scaled" in model.graph.node("blk0_ffn_up").inputs[1].name or model.graph.node("blk0_ffn_up").inputs[
        1
    ].name.endswith("_q")


def test_reported_sizes_are_the_gguf_block_sizes():
    import gguf as g

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 512)).astype(np.float32)
    for name in TYPES:
        q = quantize_matrix(w, TYPES[name])
        data, _ = encode(q)
        assert (
            q.nbytes
            == data.nbytes
            == 4
            * 512
            // g.GGML_QUANT_SIZES[getattr(g.GGMLQuantizationType, name)][0]
            * g.GGML_QUANT_SIZES[getattr(g.GGMLQuantizationType, name)][1]
        )


@pytest.mark.slow
def test_awq_scale_of_a_gated_mlp_folds_into_up_rows(tiny_gguf):
    from edgec.ir import ReferenceExecutor
    from edgec.plugins.quantize.scaling import apply_input_scale

    model = GGUFFrontend().load(tiny_gguf)
    ids = np.array([[1, 504, 3575, 282]], np.int64)
    before = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    n = len(model.graph)
    down = model.graph.node("blk0_ffn_down")
    s = np.random.default_rng(0).uniform(0.5, 2.0, 512).astype(np.float32)
    assert apply_input_scale(model, down.inputs[0], [down], s, explicit=False) == "blk0_ffn_up"
    after = ReferenceExecutor(model).run({"input_ids": ids})["logits"]
    assert len(model.graph) == n and np.abs(after - before).max() <= 1e-4 * np.abs(before).max()


@pytest.mark.slow
def test_head_pruned_decoder_runs_in_llama_cpp(tiny_gguf, tmp_path):
    """prune-heads on a GGUF decoder: every layer keeps the same KV groups count, the configuration's head
    counts follow (key_length now differs from hidden / heads) and llama.cpp runs the smaller file."""
    import json as _json

    from click.testing import CliRunner

    from edgec.cli import main

    # half the heads of a random tiny llama are half its attention (cosine 0.90 to the original): fidelity is
    # waived, the artifact must still match the pruned model on llama.cpp (the target's own criterion)
    r = CliRunner().invoke(
        main,
        [
            "compile",
            tiny_gguf,
            "--target",
            "gguf",
            "-p",
            "prune-heads{sparsity=0.5}",
            "--verify",
            "--min-cosine",
            "-1",
            "--min-top1",
            "0",
            "-o",
            str(tmp_path / "a"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    man = _json.loads(r.stdout)["manifest"]
    assert man["verification"]["passed"], man["verification"]["summary"]
    reader = gguf.GGUFReader(str(tmp_path / "a" / FILE))
    fields = {f.name: f.parts[f.data[0]].tolist() for f in reader.fields.values() if f.data}
    assert fields["llama.attention.head_count"] == [2] and fields["llama.attention.head_count_kv"] == [1]
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    assert tuple(int(d) for d in q.shape) == (256, 2 * 64)  # conftest.TINY: hidden 256, heads of 64


@pytest.mark.slow
def test_gguf_compiles_are_byte_identical(tiny_gguf, tmp_path):
    from edgec.compiler import compile as compile_model
    from tests.test_build_integration import tree_digest

    a = compile_model(tiny_gguf, "gguf", "quantize{gguf=Q4_K}", str(tmp_path / "a"), use_cache=False)
    b = compile_model(tiny_gguf, "gguf", "quantize{gguf=Q4_K}", str(tmp_path / "b"), use_cache=False)
    da, db = tree_digest(a.output_dir), tree_digest(b.output_dir)
    assert {FILE, "manifest.json", "report.html"} <= set(da) and da == db


@pytest.mark.slow
def test_eval_text_puts_perplexity_in_manifest_and_report(tiny_gguf, tmp_path):
    """--eval-text: perplexity of the float model, of the compiled IR and of the GGUF under llama.cpp on the
    same tokens; the report plots it."""
    import json as _json
    import os as _os
    import re

    from click.testing import CliRunner

    from edgec.cli import main

    text = _os.path.join(_os.path.dirname(__file__), "..", "..", "examples", "text", "eval.txt")
    r = CliRunner().invoke(
        main,
        [
            "compile",
            tiny_gguf,
            "-t",
            "gguf",
            "-p",
            "quantize{gguf=Q8_0}",
            "--eval-text",
            text,
            "-o",
            str(tmp_path / "a"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    ev = _json.loads(r.stdout)["manifest"]["evaluation"]
    assert ev["tokens"] == 1024 and ev["artifact_engine"] == "llama.cpp"
    # Q8_0 moves a random model's perplexity by well under 1%; llama.cpp computes what the IR computes
    assert abs(ev["compiled_perplexity"] / ev["float_perplexity"] - 1) < 0.01
    assert abs(ev["artifact_perplexity"] / ev["compiled_perplexity"] - 1) < 0.01
    page = (tmp_path / "a" / "report.html").read_text()
    assert 'data-plots="5"' in page and "Language model evaluation" in page
    assert re.search(r"float_perplexity</td><td>[0-9.]+", page)
    cnn = _os.path.join(_os.path.dirname(__file__), "..", "..", "examples", "models", "tiny_cnn.onnx")
    r = CliRunner().invoke(main, ["compile", cnn, "--eval-text", text, "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "needs a language model" in r.output


@pytest.mark.slow
def test_verify_of_a_language_model_includes_perplexity_on_the_builtin_text(tiny_gguf, tmp_path):
    from edgec.compiler import compile as compile_model
    from edgec.plugins.llm.evaluate import DEFAULT_EVAL_TEXT

    r = compile_model(tiny_gguf, "gguf", "", str(tmp_path / "a"), verify=True, use_cache=False)
    ev = r.manifest["evaluation"]
    assert ev["text"] == "eval.txt" and ev["tokens"] == 1024 and ev["artifact_engine"] == "llama.cpp"
    assert ev["float_perplexity"] > 1 and abs(ev["artifact_perplexity"] / ev["compiled_perplexity"] - 1) < 0.01
    assert open(DEFAULT_EVAL_TEXT, encoding="utf-8").read().lstrip().startswith("GNU GENERAL PUBLIC LICENSE")

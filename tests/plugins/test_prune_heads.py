"""prune-heads: attention heads (and grouped-query KV groups) are physically removed; the graph stays valid
and outputs are unchanged when the removed heads were already silent."""

import numpy as np
import pytest

from edgec import ir
from edgec.api.llm import LLM_KEY, LLMConfig
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir.passes import PassContext, parse_pipeline
from edgec.plugins.frontends.decoder import build_decoder
from edgec.plugins.prune.prune_heads import REPORT_KEY, find_blocks
from tests.llm.conftest import random_arrays


def _run(pipe, m, calib=None):
    for p in parse_pipeline(pipe, host().passes.as_dict()):
        p.run(m, PassContext(calibration=calib))


def _decoder(kv_heads: int, silent: dict[int, slice] | None = None, llm: bool = False) -> ir.Model:
    """A 2-layer llama decoder (4 query heads of 16, rotary, causal mask); ``silent[layer]`` names value rows
    set to zero. Without ``llm`` the language-model configuration is dropped (a plain graph)."""
    cfg = LLMConfig(
        arch="llama",
        vocab_size=300,
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=kv_heads,
        head_dim=16,
        rope_theta=10000.0,
        rms_eps=1e-5,
        context_length=64,
        tied_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        name="t",
    )
    w = random_arrays(cfg)
    for layer, rows in (silent or {}).items():
        w[f"blk.{layer}.attn_v.weight"][rows] = 0
    m = build_decoder(cfg, w)
    if not llm:
        m.metadata.pop(LLM_KEY)
    ir.infer_shapes(m)
    return m


FEEDS = {"input_ids": np.random.default_rng(1).integers(0, 300, (2, 12)).astype(np.int64)}


def _logits(m):
    return ir.ReferenceExecutor(m).run(FEEDS)["logits"]


def test_finds_multi_head_and_grouped_query_blocks():
    mha = find_blocks(_decoder(4))
    assert [(b.attention.name, b.groups, [p.name for p in b.projections], [o.name for o in b.outputs]) for b in mha][
        0
    ] == ("blk0_attn", 4, ["blk0_attn_q", "blk0_attn_k", "blk0_attn_v"], ["blk0_attn_output"])
    gqa = find_blocks(_decoder(2))
    assert len(gqa) == 2 and all(b.groups == 2 and b.heads == 4 for b in gqa)  # a group: 1 KV head + 2 queries


def test_silent_head_removed_exactly_and_tensors_shrink():
    m = _decoder(4, {0: slice(16, 32)})  # head 1 of layer 0 writes nothing
    before = _logits(m)
    _run("prune-heads{sparsity=0.25,include=^blk0_}", m)
    ir.verify(m, check_shapes=True)
    g = m.graph
    assert g.node("blk0_attn_q").inputs[1].shape == (48, 64)
    assert g.node("blk0_attn_k").inputs[1].shape == (48, 64)
    assert g.node("blk0_attn_v").inputs[1].shape == (48, 64)
    assert g.node("blk0_attn_output").inputs[1].shape == (64, 48)
    assert g.node("blk0_attn").inputs[0].shape[1] == 3 and g.node("blk0_attn").inputs[0].shape[3] == 16
    assert g.node("blk1_attn_q").inputs[1].shape == (64, 64)  # the other layer (sharing shape constants) kept
    rep = m.reports[REPORT_KEY]["blk0_attn"]
    assert rep["kept_groups"] == [0, 2, 3] and rep["heads_after"] == 3
    np.testing.assert_allclose(_logits(m), before, rtol=1e-5, atol=1e-5)


def test_grouped_query_removes_a_kv_head_with_its_queries():
    m = _decoder(2, {0: slice(16, 32), 1: slice(0, 16)})  # KV group 1 of layer 0, group 0 of layer 1 silent
    before = _logits(m)
    _run("prune-heads{sparsity=0.5}", m)
    ir.verify(m, check_shapes=True)
    g = m.graph
    for layer in (0, 1):
        assert g.node(f"blk{layer}_attn_q").inputs[1].shape == (32, 64)  # the group's 2 query heads
        assert g.node(f"blk{layer}_attn_k").inputs[1].shape == (16, 64)
        assert g.node(f"blk{layer}_attn_output").inputs[1].shape == (64, 32)
    rep = m.reports[REPORT_KEY]
    assert rep["blk0_attn"]["kept_groups"] == [0] and rep["blk1_attn"]["kept_groups"] == [1]
    np.testing.assert_allclose(_logits(m), before, rtol=1e-5, atol=1e-5)


def test_pruning_live_heads_changes_outputs_and_wanda_uses_calibration():
    m = _decoder(4)
    before = _logits(m)
    _run("prune-heads{sparsity=0.5}", m)
    assert np.abs(_logits(m) - before).max() > 1e-3  # the test above cannot pass by doing nothing
    with pytest.raises(UsageError, match="needs calibration data"):
        _run("prune-heads{score=wanda}", _decoder(4))
    from edgec.calibration import CalibrationSet

    m = _decoder(4, {0: slice(48, 64)})
    _run("prune-heads{score=wanda,sparsity=0.25,include=^blk0_}", m, CalibrationSet([FEEDS], "test"))
    assert m.reports[REPORT_KEY]["blk0_attn"]["kept_groups"] == [0, 1, 2]


def test_language_model_pruned_uniformly_updates_its_configuration():
    m = _decoder(2, llm=True)
    with pytest.raises(UsageError, match="one head count for all its layers"):
        _run("prune-heads{sparsity=0.5,include=^blk0_}", m)
    assert m.graph.node("blk0_attn_q").inputs[1].shape == (64, 64)  # refused before anything changed
    _run("prune-heads{sparsity=0.5}", m)
    cfg = LLMConfig.from_model(m)
    assert (cfg.heads, cfg.kv_heads, cfg.head_dim) == (2, 1, 16)


def test_torch_attention_block_is_found_and_pruned():
    torch = pytest.importorskip("torch")
    from edgec.ir.passes import PassManager
    from edgec.plugins.cleanup import DEFAULT_CLEANUP
    from edgec.plugins.frontends.torch import from_module

    class SelfAttention(torch.nn.Module):
        """The Hugging Face BERT layout: separate q/k/v projections, view + transpose, softmax, merge."""

        def __init__(self, d=32, h=4):
            super().__init__()
            self.h, self.dh = h, d // h
            self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))

        def forward(self, x, mask):
            b, s, d = x.shape

            def split(t):
                return t.view(b, s, self.h, self.dh).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            a = torch.softmax(q @ k.transpose(-1, -2) / self.dh**0.5 + mask, -1) @ v
            return self.o(a.transpose(1, 2).reshape(b, s, d)) + x

    torch.manual_seed(0)
    net = SelfAttention().eval()
    with torch.no_grad():  # head 2 silent: its value rows and bias
        net.v.weight[16:24] = 0
        net.v.bias[16:24] = 0
    x, mask = torch.randn(2, 6, 32), torch.zeros(2, 1, 1, 6)
    m = from_module(net, (x, mask), input_names=["x", "mask"])
    PassManager(parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())).run(m, PassContext())
    why = []
    blocks = find_blocks(m, why)
    assert len(blocks) == 1 and blocks[0].groups == 4, why
    feeds = {"x": x.numpy(), "mask": mask.numpy()}
    out = m.graph.outputs[0].name
    before = ir.ReferenceExecutor(m).run(feeds)[out]
    np.testing.assert_allclose(before, net(x, mask).detach().numpy(), rtol=1e-4, atol=1e-5)
    _run("prune-heads{sparsity=0.25}", m)
    ir.verify(m, check_shapes=True)
    assert m.reports[REPORT_KEY][blocks[0].attention.name]["kept_groups"] == [0, 1, 3]
    np.testing.assert_allclose(ir.ReferenceExecutor(m).run(feeds)[out], before, rtol=1e-5, atol=1e-5)


def test_attention_whose_mask_varies_across_heads_is_skipped_with_a_reason():
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 5, 16))
    mask = g.add_input("mask", ir.DType.FLOAT32, (1, 2, 5, 5))  # one mask per head: heads are not separable
    rng = np.random.default_rng(0)
    heads = []
    for t in "qkv":
        y = g.op(
            "Linear",
            [x, g.add_const(f"w{t}", rng.standard_normal((16, 16)).astype(np.float32))],
            domain="edgec",
            name=t,
        ).output
        y = g.op("Reshape", [y, g.add_const(f"s{t}", np.array([0, 0, 2, 8], np.int64))]).output
        heads.append(g.op("Transpose", [y], {"perm": [0, 2, 1, 3]}).output)
    a = g.op("Attention", [*heads, mask], {"scale": 0.35}, domain="edgec", name="attn").output
    a = g.op(
        "Reshape",
        [g.op("Transpose", [a], {"perm": [0, 2, 1, 3]}).output, g.add_const("merge", np.array([0, 0, 16], np.int64))],
    ).output
    g.outputs.append(
        g.op(
            "Linear", [a, g.add_const("wo", rng.standard_normal((16, 16)).astype(np.float32))], domain="edgec", name="o"
        ).output
    )
    m = ir.Model(g, {"": 18, "edgec": 1})
    ir.infer_shapes(m)
    assert not find_blocks(m)
    _run("prune-heads{sparsity=0.5}", m)
    assert m.graph.node("q").inputs[1].shape == (16, 16)
    assert m.reports[REPORT_KEY]["skipped"] == ["attn: the attention mask varies across heads"]

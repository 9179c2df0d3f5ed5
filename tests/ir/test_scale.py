"""Growth, not speed: the IR's operations, the verifier, ONNX import and export and the default cleanup must
take time linear (or n log n) in the graph's size.

Each test times the same work at n and 8n (CPU time of this process, best of a few runs, the collector paused)
and bounds the ratio at 20: linear work gives ~8 (a little more from caches), quadratic work 64. The sizes are
chosen so that each quadratic implementation these tests were written against (probing names from zero,
``list.remove`` / ``list.index`` on the node list, scanning a shared constant's use list, scanning every value
to look one up by name) dominates at 8n, and so that the whole file runs in a few seconds. Absolute speed is
measured by ``benchmarks/graph_scale.py``, not here. The rest checks that the faster paths behave exactly like
the plain definitions (naming, order, lookups).
"""

from __future__ import annotations

import gc
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir
from edgec.ir import DType, Graph, IRError, Node, Value
from edgec.ir.ops import ExpandContext

FACTOR = 8
MAX_RATIO = 20


def _cpu_time(make, run, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        state = make(n)
        gc.collect()
        was = gc.isenabled()
        gc.disable()
        try:
            t0 = time.process_time()
            run(state)
            best = min(best, time.process_time() - t0)
        finally:
            if was:
                gc.enable()
        del state
    return best


def assert_linear(make, run, n: int, repeat: int = 3) -> None:
    """``run(make(k))`` at k = 8n costs at most MAX_RATIO times what it costs at k = n."""
    small = _cpu_time(make, run, n, repeat)
    big = _cpu_time(make, run, FACTOR * n, 1)
    ratio = big / max(small, 1e-4)
    assert ratio < MAX_RATIO, (
        f"{FACTOR}x the size took {ratio:.1f}x the time ({small:.3f} s -> {big:.3f} s): superlinear"
    )


def chain(n: int, shared: bool = True) -> tuple[Graph, Value]:
    """x -> Add(c) -> Relu -> Add(c) -> ...: n unnamed nodes; every Add reads the one constant ``c``."""
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (4,))
    c = g.add_const("c", np.ones(4, np.float32))
    for k in range(n):
        if k % 2 == 0:
            x = g.append(
                Node(
                    "Add",
                    [x, c if shared else g.add_const("c", np.ones(4, np.float32))],
                    outputs=[Value(f"t{k}", DType.FLOAT32, (4,))],
                )
            ).output
        else:
            x = g.append(Node("Relu", [x], outputs=[Value(f"t{k}", DType.FLOAT32, (4,))])).output
    g.outputs.append(x)
    return g, c


# ------------------------------------------------------------------------------------------- core operations
def test_naming_unnamed_nodes_is_linear():
    assert_linear(lambda n: n, lambda n: chain(n), 2000)


def test_removing_nodes_is_linear():
    def run(g):
        for node in reversed(g.nodes[1:]):  # from the back: a list scan would walk the whole list each time
            g.remove(node, safe=False)

    assert_linear(lambda n: chain(n)[0], run, 4000)


def test_inserting_before_and_after_is_linear():
    def run(g):
        last = g.nodes[-1]
        for _ in range(len(g) // 2):
            g.insert_before(last, Node("Neg", [last.inputs[0]], outputs=1))
            g.insert_after(last, Node("Neg", [last.inputs[0]], outputs=1))

    assert_linear(lambda n: chain(n)[0], run, 2000)


def test_lookups_by_name_are_linear():
    def run(g):
        for n in g.nodes:
            assert g.node(n.name) is n
            assert g.value(n.output.name) is n.output

    assert_linear(lambda n: chain(n)[0], run, 1000)


def test_uses_of_a_shared_constant_are_linear():
    def run(state):
        g, c = state
        c2 = g.add_const("c2", np.ones(4, np.float32))
        c.replace_all_uses_with(c2)
        for node in reversed(g.nodes[1:]):  # each removal drops one use of c2: not a scan of its use list
            g.remove(node, safe=False)

    assert_linear(chain, run, 2500)


def test_verify_with_a_shared_constant_is_linear():
    assert_linear(lambda n: ir.Model(chain(n)[0]), ir.verify, 1000)


def test_sort_is_linear():
    def make(n):
        g, _ = chain(n)
        g.insert_before(g.nodes[0], g.nodes[-1].__class__("Neg", [g.inputs[0]], outputs=1))
        return g

    assert_linear(make, lambda g: g.sort(), 2000)


# --------------------------------------------------------------------------------------- ONNX import, export
def onnx_chain(n: int) -> onnx.ModelProto:
    """The ONNX form of :func:`chain` with empty node names, no value_info: import names every node and
    infers every shape."""
    nodes, prev = [], "x"
    for k in range(n):
        out = f"t{k}"
        nodes.append(
            helper.make_node("Add", [prev, "c"], [out]) if k % 2 == 0 else helper.make_node("Relu", [prev], [out])
        )
        prev = out
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "c")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_onnx_import_with_unnamed_nodes_is_linear():
    from edgec.plugins.frontends.onnx import import_proto

    assert_linear(onnx_chain, lambda p: import_proto(p, None), 1000)


def test_onnx_import_names_unnamed_nodes_like_before():
    from edgec.plugins.frontends.onnx import import_proto

    m = import_proto(onnx_chain(6), None)
    assert [n.name for n in m.graph] == ["Add_0", "Relu_0", "Add_1", "Relu_1", "Add_2", "Relu_2"]
    assert m.graph.outputs[0].shape == (4,)
    ir.verify(m)


def test_onnx_export_of_many_expanded_ops_is_linear():
    def make(n):
        g = Graph()
        x = g.add_input("x", DType.FLOAT32, (4,))
        for _ in range(n):
            x = g.op("Gelu", [x], {"approximate": "tanh"}, domain="edgec").output
        g.outputs.append(x)
        return ir.Model(g, {"": 17, "edgec": 1})

    assert_linear(make, lambda m: ir.to_onnx(m, with_shapes=False), 500)


def test_expansion_names_are_the_smallest_free():
    ctx = ExpandContext(17, [], [], {"mul__1"})
    assert [ctx.name("mul") for _ in range(3)] == ["mul__0", "mul__2", "mul__3"]
    ctx.taken.add("mul__5")
    assert [ctx.name("mul") for _ in range(2)] == ["mul__4", "mul__6"]
    assert ctx.name("add") == "add__0"


# ----------------------------------------------------------------------------------------- the default cleanup
def cleanup_model(n: int) -> ir.Model:
    """n blocks of MatMul by a shared constant weight + bias Add (fuse-linear), an Identity (eliminate-identity)
    and a dead Relu (dce), unnamed."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (2, 8))
    w = g.add_const("w", rng.standard_normal((8, 8)).astype(np.float32))
    b = g.add_const("b", rng.standard_normal(8).astype(np.float32))
    for _ in range(n):
        y = g.append(Node("MatMul", [x, w], outputs=1)).output
        y = g.append(Node("Add", [y, b], outputs=1)).output
        g.append(Node("Relu", [y], outputs=1))  # dead
        x = g.append(Node("Identity", [y], outputs=1)).output
    g.outputs.append(x)
    m = ir.Model(g)
    ir.infer_shapes(m)
    return m


def test_default_cleanup_is_linear():
    from edgec.host import host
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.plugins.cleanup import DEFAULT_CLEANUP

    passes = parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())

    def run(m):
        PassManager(passes).run(m)
        assert len(m.graph) == len(m.graph.initializers) - 1  # one Linear per block; its w_t, and b

    m = cleanup_model(3)
    PassManager(passes).run(m)
    assert [n.qualified_op for n in m.graph] == ["edgec::Linear"] * 3
    assert_linear(cleanup_model, run, 150, repeat=2)


# ---------------------------------------------------------------------------------- the fast paths' behaviour
def test_node_names_reuse_the_smallest_free_suffix():
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (4,))
    g.append(Node("Relu", [x], name="Relu_1", outputs=1))
    nodes = [g.append(Node("Relu", [x], outputs=1)) for _ in range(4)]
    assert [n.name for n in nodes] == ["Relu_0", "Relu_2", "Relu_3", "Relu_4"]
    g.remove(nodes[2])  # frees Relu_3
    g.remove(nodes[0])  # frees Relu_0
    assert [g.append(Node("Relu", [x], outputs=1)).name for _ in range(3)] == ["Relu_0", "Relu_3", "Relu_5"]
    dup = g.append(Node("Relu", [x], name="Relu_2", outputs=1))  # a taken name gets a suffix of its own
    assert dup.name == "Relu_2_0"
    assert len({n.name for n in g}) == len(g)


def test_node_order_after_edits():
    g, _ = chain(6)
    n = g.nodes
    a = g.insert_before(n[0], Node("Neg", [g.inputs[0]], name="first", outputs=1))
    b = g.insert_after(n[-1], Node("Neg", [n[-1].output], name="last", outputs=1))
    c = g.insert_after(n[2], Node("Neg", [n[2].output], name="mid", outputs=1))
    with g.inserting_before(n[4]):
        d = g.op("Neg", [n[3].output], name="ctx")
    g.remove(n[1], safe=False)
    assert list(g) == [a, n[0], n[2], c, n[3], d, n[4], n[5], b]
    assert list(g.nodes) == list(g) and len(g) == 9
    for k in (a, b, c, d):
        g.remove(k)
    assert list(g) == [n[0], n[2], n[3], n[4], n[5]]
    g.remove(n[0], safe=False)
    g.remove(n[5], safe=False)
    assert list(g) == [n[2], n[3], n[4]] and len(g) == 3
    with pytest.raises(IRError, match="not in graph"):
        g.insert_before(n[0], Node("Neg", [g.inputs[0]], outputs=1))


def test_iteration_is_a_snapshot():
    g, _ = chain(4)
    seen = []
    for n in g:
        seen.append(n.name)
        if n.op_type == "Add":
            g.insert_after(n, Node("Neg", [n.output], outputs=1))
    assert seen == ["Add_0", "Relu_0", "Add_1", "Relu_1"]
    assert [n.op_type for n in g] == ["Add", "Neg", "Relu", "Add", "Neg", "Relu"]


def test_long_use_lists_keep_their_order():
    g, c = chain(40)
    adds = [n for n in g if n.op_type == "Add"]
    assert [u.node for u in c.uses] == adds
    adds[5].replace_input_with(1, g.inputs[0])
    adds[3].replace_input_with(1, g.inputs[0])
    adds[3].replace_input_with(1, c)  # recorded again, last
    assert [u.node for u in c.uses] == adds[:3] + adds[4:5] + adds[6:] + [adds[3]]
    assert [(u.node, u.index) for u in g.inputs[0].uses] == [(adds[0], 0), (adds[5], 1)]
    with pytest.raises(IRError, match="not recorded"):
        c._remove_use(adds[5], 1)
    ir.verify(ir.Model(g))


def test_lookups_see_renames_behind_the_graphs_back():
    g, _ = chain(4)
    v = g.nodes[1].output
    v.name = "renamed"  # not through Graph.rename
    assert g.value("renamed") is v
    g.nodes[2].name = "odd"
    assert g.node("odd") is g.nodes[2]
    with pytest.raises(KeyError):
        g.value("t1")
    removed = g.nodes[-1]
    g.outputs[0] = g.nodes[-2].output
    g.remove(removed)
    with pytest.raises(KeyError):
        g.node(removed.name)
    with pytest.raises(KeyError):
        g.value(removed.output.name)


def test_verify_checks_each_distinct_quantized_tensor_and_remembers_only_immutable_ones():
    from edgec.ir import QuantizedTensor, verifier

    calls = []

    class Counting(QuantizedTensor):
        def validate(self):
            calls.append(self)
            return super().validate()

    codes = np.zeros((4, 4), np.int8)
    q = Counting(codes=codes, bits=8, scheme="symmetric", scales=np.ones((4, 1), np.float32), axis=0)
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (2, 4))
    for k in range(3):  # one tensor shared by three constants
        x = g.op("MatMul", [x, g.add_const(f"w{k}", q)]).output
    g.outputs.append(x)
    m = ir.Model(g)
    ir.verify(m)
    ir.verify(m)
    assert len(calls) == 2  # once per call: writable arrays may have changed in between
    codes[0, 0] = 127  # still valid
    ir.verify(m)
    for a in (codes, q.scales):
        a.flags.writeable = False
    calls.clear()
    ir.verify(m)
    ir.verify(m)
    assert len(calls) == 1  # immutable: remembered
    object.__setattr__(q, "bits", 99)  # a field swapped behind the frozen dataclass: checked again
    with pytest.raises(ir.VerificationError, match="bits must be"):
        ir.verify(m)
    assert len(calls) == 2
    assert verifier._immutable(np.frombuffer(b"abcd", np.uint8))
    assert not verifier._immutable(np.ones(3)[:2])

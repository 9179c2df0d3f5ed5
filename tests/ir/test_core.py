"""IR invariants: use lists stay exact after every kind of mutation; unsafe edits are refused."""

import numpy as np
import pytest

from edgec import ir
from edgec.ir import DType, Graph, IRError, Node, Value


def uses_of(v):
    return [(u.node.name, u.index) for u in v.uses]


def check_use_lists(g: Graph):
    """Every recorded use matches the node's input slot, and every input slot is recorded."""
    for n in g.nodes:
        for i, v in enumerate(n.inputs):
            if v is not None:
                assert (n.name, i) in uses_of(v)
    for v in g.values():
        for u in v.uses:
            assert u.node.inputs[u.index] is v


def small_graph():
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (4,))
    a = g.op("Relu", [x], name="a").output
    b = g.op("Add", [a, a], name="b").output
    c = g.op("Neg", [b], name="c").output
    g.outputs.append(c)
    return g, x, a, b, c


def test_construction_records_uses_in_order():
    g, x, a, b, c = small_graph()
    assert uses_of(a) == [("b", 0), ("b", 1)]
    assert uses_of(x) == [("a", 0)]
    assert a.producer.name == "a" and a.index == 0
    check_use_lists(g)


def test_inputs_are_read_only():
    g, x, a, b, c = small_graph()
    with pytest.raises((AttributeError, TypeError)):
        g.node("b").inputs = (x, x)
    with pytest.raises(TypeError):
        g.node("b").inputs[0] = x


def test_replace_input_with_updates_both_sides():
    g, x, a, b, c = small_graph()
    g.node("b").replace_input_with(1, x)
    assert uses_of(a) == [("b", 0)]
    assert uses_of(x) == [("a", 0), ("b", 1)]
    g.node("b").replace_input_with(0, None)
    assert uses_of(a) == []
    check_use_lists(g)


def test_set_inputs_and_replace_all_uses_with():
    g, x, a, b, c = small_graph()
    g.node("c").set_inputs([a])
    assert uses_of(b) == [] and ("c", 0) in uses_of(a)
    a.replace_all_uses_with(x)
    assert uses_of(a) == []
    assert sorted(uses_of(x)) == sorted([("a", 0), ("b", 0), ("b", 1), ("c", 0)])
    check_use_lists(g)


def test_replace_all_uses_with_updates_graph_outputs():
    g, x, a, b, c = small_graph()
    d = g.op("Abs", [b], name="d").output
    c.replace_all_uses_with(d)
    assert g.outputs == [d]


def test_remove_refuses_to_orphan_uses_and_outputs():
    g, x, a, b, c = small_graph()
    with pytest.raises(IRError, match="used by b"):
        g.remove(g.node("a"))
    with pytest.raises(IRError, match="graph output"):
        g.remove(g.node("c"))
    assert len(g) == 3


def test_remove_detaches_inputs():
    g, x, a, b, c = small_graph()
    extra = g.op("Exp", [a], name="extra")
    assert ("extra", 0) in uses_of(a)
    g.remove(extra)
    assert ("extra", 0) not in uses_of(a)
    check_use_lists(g)
    ir.verify(ir.Model(g))


def test_inserting_before_and_mutating_while_iterating():
    g, x, a, b, c = small_graph()
    for n in g:  # iterating a snapshot: inserting must not disturb the walk
        if n.op_type == "Neg":
            with g.inserting_before(n):
                s = g.op("Sigmoid", [n.inputs[0]], name="sig").output
            n.replace_input_with(0, s)
    assert [n.name for n in g.nodes] == ["a", "b", "sig", "c"]
    check_use_lists(g)
    ir.verify(ir.Model(g))


def test_sort_restores_topological_order_deterministically():
    g, x, a, b, c = small_graph()
    late = Node("Exp", [x], name="late", outputs=1)
    g.append(late)
    g.node("a").replace_input_with(0, late.output)  # a now depends on a node after it
    g.sort()
    assert [n.name for n in g.nodes] == ["late", "a", "b", "c"]
    ir.verify(ir.Model(g))


def test_sort_reports_cycles():
    g, x, a, b, c = small_graph()
    g.node("a").replace_input_with(0, b)
    with pytest.raises(IRError, match="cycle"):
        g.sort()


def test_value_with_two_producers_is_refused():
    v = Value("v")
    Node("Relu", [], name="p1", outputs=[v])
    with pytest.raises(IRError, match="already has producer"):
        Node("Relu", [], name="p2", outputs=[v])


def test_unique_names_and_rename():
    g, x, a, b, c = small_graph()
    v = g.add_const("x", np.ones(2, np.float32))  # clashes with the input's name
    assert v.name != "x"
    g.rename(v, "ones")
    assert "ones" in g.initializers
    with pytest.raises(IRError, match="taken"):
        g.rename(v, "x")


def test_verifier_reports_every_problem():
    g, x, a, b, c = small_graph()
    g.node("a")._inputs = (Value("ghost", DType.FLOAT32, (4,)),)  # corrupt on purpose, bypassing the API
    m = ir.Model(g)
    with pytest.raises(ir.VerificationError) as e:
        ir.verify(m)
    msg = str(e.value)
    assert "ghost" in msg and "does not record this use" in msg


def test_verifier_checks_edgec_ops_and_annotations():
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (2, 4))
    g.outputs.append(g.op("Linear", [x], domain="edgec", name="bad", num_outputs=1).output)
    with pytest.raises(ir.VerificationError, match="takes 2..3 inputs"):
        ir.verify(ir.Model(g, {"": 17, "edgec": 1}))


def test_networkx_view():
    g, x, a, b, c = small_graph()
    nxg = ir.to_networkx(g)
    import networkx as nx

    assert list(nx.topological_sort(nxg)) == ["a", "b", "c"]
    assert nxg.number_of_edges("a", "b") == 2


def test_dtypes_low_bit():
    assert DType.INT4.bits == 4 and DType.INT4.is_low_bit and DType.INT4.numpy == np.int8
    assert DType.NF4.bits == 4 and DType.UINT4.numpy == np.uint8
    assert ir.code_range(4, True) == (-8, 7) and ir.code_range(3, False) == (0, 7)
    assert ir.code_dtype(4, True) is DType.INT4 and ir.code_dtype(2, False) is DType.UINT2
    with pytest.raises(ValueError, match="unknown dtype"):
        DType.from_short("f33")


def test_arg_returns_a_present_input_and_names_a_missing_one():
    g = Graph()
    x = g.add_input("x", DType.FLOAT32, (2,))
    n = g.op("Clip", [x, None], name="clip")
    assert n.arg(0) is x and n.arg(-2) is x
    with pytest.raises(IRError, match=r"node 'clip' \(Clip\) has no input 1"):
        n.arg(1)
    with pytest.raises(IRError, match="has no input 5"):
        n.arg(5)

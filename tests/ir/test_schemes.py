"""Quantization schemes as types (edgec.ir.schemes): each scheme's rules, reference dequantization against hand-computed
values, its exact zero, and a registry that covers every scheme name edgec uses."""

import dataclasses
import typing

import numpy as np
import pytest

from edgec.ir import QuantizedTensor
from edgec.ir.schemes import SCHEMES, Affine, Asymmetric, Codebook, Scheme, Symmetric, Vector
from edgec.ir.tensor import SchemeName
from edgec.target import Encoders
from edgec.errors import UnsupportedError


def sym():
    return QuantizedTensor(
        np.array([[-2, 1], [3, -4]], np.int8), 4, "symmetric", scales=np.array([[0.5], [0.25]], np.float32), axis=0
    )


def asym():
    return QuantizedTensor(
        np.array([[0, 15], [7, 3]], np.uint8),
        4,
        "asymmetric",
        scales=np.array([[0.5], [2.0]], np.float32),
        zero_points=np.array([[8], [7]], np.uint8),
        axis=0,
    )


def affine():
    # w = code * scale + offset, group-wise (groups of 2 along K)
    return QuantizedTensor(
        np.array([[1, 3, 0, 2]], np.uint8),
        2,
        "affine",
        scales=np.array([[0.5, 2.0]], np.float32),
        offsets=np.array([[-1.0, 4.0]], np.float32),
        axis=0,
        group_size=2,
        group_axis=1,
    )


def codebook():
    return QuantizedTensor(
        np.array([[0, 3], [1, 2]], np.uint8),
        2,
        "codebook",
        codebook=np.array([-1.0, -0.25, 0.25, 1.0], np.float32),
        scales=np.array([[2.0], [4.0]], np.float32),
    )


def vector():
    # [O=2, K=4], vector_dim 2, one codebook [1 row block, 1 column group, 2 entries, 2]
    cb = np.array([[[[1.0, 2.0], [-3.0, 0.5]]]], np.float32)
    return QuantizedTensor(
        np.array([[0, 1], [1, 1]], np.uint8), 1, "vector", codebook=cb, group_size=4, group_axis=1, vector_dim=2
    )


HAND = {  # scheme -> (tensor, the values worked out by hand)
    "symmetric": (sym, [[-1.0, 0.5], [0.75, -1.0]]),
    "asymmetric": (asym, [[-4.0, 3.5], [0.0, -8.0]]),
    "affine": (affine, [[-0.5, 0.5, 4.0, 8.0]]),
    "codebook": (codebook, [[-2.0, 2.0], [-1.0, 1.0]]),
    "vector": (vector, [[1.0, 2.0, -3.0, 0.5], [-3.0, 0.5, -3.0, 0.5]]),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_dequantize_hand_computed(name):
    make, expected = HAND[name]
    q = make()
    assert q.validate() == []
    assert q.scheme_type is SCHEMES[name] and q.scheme_type.name == name
    got = q.dequantize()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(expected, np.float32))


def test_registry_covers_every_scheme_name():
    names = set(typing.get_args(SchemeName))
    assert set(SCHEMES) == names == {"symmetric", "asymmetric", "affine", "codebook", "vector"}
    assert [type(s) for s in SCHEMES.values()] == [Symmetric, Asymmetric, Affine, Codebook, Vector]
    assert all(isinstance(s, Scheme) for s in SCHEMES.values())
    # the names every other part of edgec writes: GGUF's block types, the quantize passes' options, the targets'
    # declared encodings
    from edgec.api import gguf
    from edgec.host import PluginHost

    used = {t.scheme for t in gguf.TYPES.values()}
    host = PluginHost(autoload=False)
    for name in ("quantize", "quantize-activations"):
        opt = next(o for o in host.passes[name].options() if o["name"] == "scheme")
        used |= set(opt["choices"])
    for t in host.targets.as_dict().values():
        used |= {s for s, _ in t.capabilities.quant}
    assert used <= names, used - names


def test_properties():
    assert [n for n, s in SCHEMES.items() if s.signed] == ["symmetric"]
    assert [n for n, s in SCHEMES.items() if s.has_zero_point] == ["asymmetric"]
    assert [n for n, s in SCHEMES.items() if s.has_offsets] == ["affine"]
    assert [n for n, s in SCHEMES.items() if s.indexes_codebook] == ["codebook", "vector"]
    assert SCHEMES["symmetric"].code_range(4) == (-8, 7)
    assert SCHEMES["asymmetric"].code_range(4) == (0, 15)
    assert SCHEMES["vector"].max_bits == 16 and SCHEMES["codebook"].max_bits == 8


@pytest.mark.parametrize(
    "make, mutate, message",
    [
        (sym, dict(zero_points=np.zeros((2, 1), np.uint8)), "symmetric scheme must not carry zero_points"),
        (sym, dict(codes=np.array([[-9, 0], [0, 0]], np.int8)), "outside the 4-bit signed range [-8, 7]"),
        (sym, dict(offsets=np.zeros((2, 1), np.float32)), "only the affine scheme carries offsets"),
        (sym, dict(scales=None), "symmetric scheme needs scales"),
        (asym, dict(zero_points=None), "asymmetric scheme needs zero_points"),
        (asym, dict(codes=np.array([[16, 0], [0, 0]], np.uint8)), "outside the 4-bit unsigned range [0, 15]"),
        (affine, dict(offsets=None), "affine scheme needs offsets"),
        (affine, dict(zero_points=np.zeros((1, 2), np.uint8)), "affine scheme must not carry zero_points"),
        (codebook, dict(codebook=None), "codebook scheme needs a codebook"),
        (codebook, dict(codes=np.array([[4, 0], [0, 0]], np.uint8), bits=3), "codes index outside the codebook's 4"),
        (codebook, dict(bits=1), "codebook has 4 entries, more than 2**bits=2"),
        (codebook, dict(vector_dim=2), "each needs the vector scheme"),
        (vector, dict(scales=np.ones((2, 1), np.float32)), "carries no axis, scales, zero points or offsets"),
        (vector, dict(codes=np.array([[0, 2], [0, 0]], np.uint8)), "codes index outside the codebook's 2 entries"),
        (vector, dict(bits=17), "bits must be 1..16"),
        (sym, dict(bits=9), "bits must be 1..8"),
        (sym, dict(scheme="ternary"), "scheme 'ternary' is not one of ('symmetric', 'asymmetric', 'affine', "),
    ],
)
def test_each_scheme_rules(make, mutate, message):
    q = dataclasses.replace(make(), **mutate)
    errs = q.validate()
    assert any(message in e for e in errs), errs


def test_exact_zero():
    zero = np.array([[True, False], [False, True]])
    for make in (sym, asym, codebook):
        q = make().scheme_type.exact_zero(make(), zero)
        assert q is not None and q.validate() == []
        w = q.dequantize()
        assert (w[zero] == 0).all()
        # the grids keep every other weight; a palette's entry nearest zero becomes 0 for the weights coded to it
        moved = np.isin(make().codes, [1]) if make is codebook else np.zeros_like(zero)
        np.testing.assert_array_equal(w[~zero & ~moved], make().dequantize()[~zero & ~moved])
        assert (w[moved] == 0).all()
    assert SCHEMES["affine"].exact_zero(affine(), np.zeros((1, 4), bool)) is None
    assert SCHEMES["vector"].exact_zero(vector(), np.zeros((2, 4), bool)) is None


def test_describe_and_repr_by_scheme():
    assert "vector_dim" not in sym().describe()
    d = vector().describe()
    assert d["vector_dim"] == 2 and d["bits_per_weight"] == 0.5 and d["scheme"] == "vector"
    assert repr(sym()) == "QuantizedTensor(symmetric 4b [2, 2], axis=0)"
    assert repr(vector()) == "QuantizedTensor(vector 2D 1b-index [2, 4], group=4)"


def test_take_rows_by_scheme():
    idx = np.array([1, 0])
    q = sym().take_rows(idx)
    np.testing.assert_array_equal(q.dequantize(), sym().dequantize()[idx])
    np.testing.assert_array_equal(vector().take_rows(idx).dequantize(), vector().dequantize()[idx])
    per_col = QuantizedTensor(
        np.array([[0, 1], [1, 0]], np.uint8),
        1,
        "codebook",
        codebook=np.array([[0.0, 1.0], [2.0, 3.0]], np.float32),
        axis=1,
    )
    with pytest.raises(ValueError, match="palettes are not per row"):
        per_col.take_rows(idx)


def test_encoders_table():
    enc = Encoders()

    @enc.register("symmetric", "asymmetric")
    def grid(builder, q):
        return ("grid", q.scheme)

    assert enc.schemes() == {"symmetric", "asymmetric"}
    assert enc.encoder(sym())(None, sym()) == ("grid", "symmetric")
    with pytest.raises(UnsupportedError, match="does not encode codebook weights; it carries asymmetric, symmetric"):
        enc.encoder(codebook(), "the test target")
    assert enc.quant(range(4, 6)) == {("symmetric", 4), ("symmetric", 5), ("asymmetric", 4), ("asymmetric", 5)}
    assert enc.quant({"symmetric": [8]}) == {("symmetric", 8)}
    with pytest.raises(ValueError, match="not quantization schemes"):
        enc.register("ternary")
    with pytest.raises(ValueError, match="no encoder for"):
        enc.quant({"vector": [8]})

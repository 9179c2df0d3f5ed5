"""edgec IR -> an OpenVINO model, built op by op with the ``openvino.opset16`` API (no ONNX or TVM detour).

Quantized weights become the decompression subgraphs the OpenVINO CPU plugin recognises and keeps
compressed in memory for MatMul (FullyConnected) layers:

    Constant(u8|i8|u4|i4|nf4) -> Convert(f32) [-> Subtract(zero point)] -> Multiply(scale) [-> Add(offset)]
        [-> Reshape, for group-wise grids] -> MatMul(transpose_b=True)

The codes, zero points and scales are the IR's own (nothing is re-rounded): the subgraph computes exactly
``QuantizedTensor.dequantize``. Codebook grids other than NF4 are a codes constant plus a Gather from the
codebook. Activation quantization (``Value.quant``) becomes FakeQuantize with the IR's scale and zero point.
Symbolic dims stay dynamic (``-1``), so a language model takes any sequence length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedError
from ...ir import Model, Node, QuantizedTensor, Value, code_range
from ...ir.tensor import vector_bases
from ...quiet import quiet_libraries
from ...target import Encoders, Lowerings, onnx_type_name

LOWERINGS = Lowerings()
lowering = LOWERINGS.register
# The weight encodings, by scheme (OVBuilder's methods register themselves): what the target carries.
ENCODERS = Encoders()
encoder = ENCODERS.register


def supported_ops() -> frozenset[str]:
    return LOWERINGS.ops()


def _ov():
    quiet_libraries()  # before the first import: openvino's telemetry writes ~/intel (see edgec.quiet)
    try:
        import openvino as ov
        import openvino.opset16 as ops
    except ImportError:
        raise UnsupportedError(
            "the openvino target needs OpenVINO: pip install 'edgec[openvino]' (openvino 2026.x)"
        ) from None
    return ov, ops


# The NF4 levels OpenVINO's nf4 element type decodes to. edgec's table (bitsandbytes') differs from it by one
# float32 ulp at one level; NF4 weights whose codebook is OpenVINO's exactly use the native type, others
# (and edgec's own NF4) go through the exact Gather form unless the target is told nf4=native.
OV_NF4 = np.array(
    [
        -1.0,
        -0.6961928,
        -0.52507305,
        -0.3949175,
        -0.28444138,
        -0.18477343,
        -0.09105004,
        0.0,
        0.0795803,
        0.1609302,
        0.2461123,
        0.33791524,
        0.44070983,
        0.562617,
        0.72295684,
        1.0,
    ],
    np.float32,
)


def storage_type(q: QuantizedTensor) -> str:
    """OpenVINO element type of ``q``'s codes: i4/u4 for up to 4 bits, i8/u8 for 5-8 bits."""
    return ("i" if q.signed else "u") + ("4" if q.bits <= 4 else "8")


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Two 4-bit codes per byte, the first in the low nibble (OpenVINO's u4/i4/nf4 layout)."""
    flat = (np.asarray(codes).astype(np.int16).reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return np.ascontiguousarray(flat[0::2] | (flat[1::2] << 4))


def _f16_exact(q: QuantizedTensor) -> bool:
    """True when dequantizing ``q`` in float16 ((code - zp) * scale, each step rounded to float16) gives
    exactly its float32 dequantization: float16 scales whose products with every code are float16 values
    (``quantize{scale_dtype=f16}`` makes them so for grids of 4 bits and fewer)."""
    if q.offsets is not None or q.scales is None:
        return False
    s = np.asarray(q.scales, np.float32)
    s16 = s.astype(np.float16)
    if not (np.isfinite(s16).all() and np.array_equal(s16.astype(np.float32), s)):
        return False
    ref = q.dequantize()
    codes = np.asarray(q.codes).astype(np.float16)
    shape, split = _blocking(q)
    c = codes.reshape(shape)
    if q.zero_points is not None:
        c = c - np.asarray(q.zero_points).astype(np.float16).reshape(_param_shape(q.zero_points, q, split))
    half = (c * s16.reshape(_param_shape(s, q, split))).astype(np.float32).reshape(q.shape)
    return bool(np.array_equal(half, ref))


def _blocking(q: QuantizedTensor) -> tuple[list[int], list[bool]]:
    """Codes shape with each blocked dim split into (blocks, block size), and which dims were split."""
    params = [p for p in (q.scales, q.zero_points, q.offsets) if p is not None]
    shape, split = [], []
    for d, s in enumerate(q.shape):
        blocks = {int(np.shape(p)[d]) for p in params if np.ndim(p) == len(q.shape)} - {1, s}
        if len(blocks) > 1:
            raise UnsupportedError(f"quantization parameters with different blockings along dim {d}")
        if blocks:
            b = blocks.pop()
            shape += [b, s // b]
            split.append(True)
        else:
            shape.append(s)
            split.append(False)
    return shape, split


def _param_shape(p: np.ndarray, q: QuantizedTensor, split: list[bool]) -> list[int]:
    p = np.asarray(p)
    if p.ndim != len(q.shape):
        p = p.reshape(p.shape + (1,) * (len(q.shape) - p.ndim)) if p.ndim else p.reshape((1,) * len(q.shape))
    out = []
    for d, s in enumerate(split):
        out += [p.shape[d], 1] if s else [p.shape[d]]
    return out


class OVBuilder:
    """Translates one model; :meth:`build` returns an ``openvino.Model``.

    ``float_weights``: ``f32``, or ``f16`` (float weights stored in half precision and decompressed by a
    Convert, as OpenVINO's own FP16 compression does).
    """

    def __init__(self, model: Model, float_weights: str = "f32", nf4: str = "exact", decompression: str = "exact"):
        self.ov, self.ops = _ov()
        self.model = model
        self.float_weights = float_weights
        self.nf4 = nf4
        self.decompression = decompression
        self.env: dict[int, object] = {}
        self.encodings: dict[str, str] = {}  # weight name -> how it was stored

    # ---------------------------------------------------------------------------------------------- helpers
    def const(self, arr, dtype: str | None = None):
        a = np.array(arr, dtype=dtype, order="C")  # a copy (never a view of a memory map); 0-d stays 0-d
        # Canonical dtype: numpy has two int64 type numbers ('l' and 'q'); OpenVINO's binding knows one.
        a = a.view(np.dtype(a.dtype.str)) if a.dtype.kind in "iu" else a
        return self.ops.constant(a).output(0)

    def ints(self, values) -> object:
        return self.const(np.asarray(values, np.int64).reshape(-1))

    def const_ints(self, v: Value | None) -> list[int] | None:
        if v is None:
            return None
        if not v.is_const:
            raise UnsupportedError(f"{v.name!r} must be a constant for the openvino target")
        return [int(x) for x in np.asarray(v.numpy()).reshape(-1)]

    def scalar(self, x: float, like: Value):
        return self.const(np.asarray(x, like.dtype.numpy if like.dtype is not None else np.float32))

    def get(self, v: Value):
        if id(v) not in self.env:
            if not v.is_const:
                raise UnsupportedError(
                    f"value {v.name!r} is used before the openvino target computed it (its "
                    "producer's lowering does not give that output)"
                )
            self.env[id(v)] = self.weight(v)
        return self.env[id(v)]

    def weight(self, v: Value):
        ov, ops = self.ov, self.ops
        if isinstance(v.const, QuantizedTensor):
            return self.decompress(v.name, v.const)
        arr = np.asarray(v.numpy())
        if self.float_weights == "f16" and arr.dtype == np.float32 and arr.size > 1:
            self.encodings[v.name] = "f16"
            c = ops.constant(arr.astype(np.float16))
            return ops.convert(c, ov.Type.f32).output(0)
        return self.const(arr)

    def _typed_const(self, codes: np.ndarray, etype: str, shape: list[int]):
        """A Constant of a (possibly sub-byte) integer element type holding ``codes``."""
        ov, ops = self.ov, self.ops
        if etype in ("u8", "i8"):
            return ops.constant(
                np.ascontiguousarray(codes.reshape(shape).astype(np.uint8 if etype == "u8" else np.int8))
            )
        t = ov.Tensor(getattr(ov.Type, etype), ov.Shape(shape))
        data = pack_nibbles(codes)
        t.data[:] = data.reshape(t.data.shape)
        return ops.constant(t, shared_memory=False)

    def decompress(self, name: str, q: QuantizedTensor):
        return ENCODERS.encoder(q, "the openvino target")(self, name, q)

    @encoder("symmetric", "asymmetric", "affine")
    def _grid(self, name: str, q: QuantizedTensor):
        ov, ops = self.ov, self.ops
        f32 = ov.Type.f32
        etype = storage_type(q)
        lo, hi = q.scheme_type.code_range(q.bits)
        codes = np.asarray(q.codes)
        if codes.min(initial=lo) < lo or codes.max(initial=hi) > hi:
            raise UnsupportedError(f"weight {name!r}: codes outside the {q.bits}-bit range")
        cshape, split = _blocking(q)
        assert q.scales is not None  # a uniform grid has its scales (checked by the IR)
        # float16 arithmetic (the decompression OpenVINO's own compression emits, fastest on the CPU plugin)
        # when it reproduces the IR's weights exactly; float32 otherwise.
        exact = _f16_exact(q)
        half = exact or (self.decompression == "f16" and q.offsets is None)
        ct = ov.Type.f16 if half else f32
        node = ops.convert(self._typed_const(codes, etype, cshape), ct)
        if q.zero_points is not None:
            zp = np.asarray(q.zero_points)
            zc = self._typed_const(zp, "u8" if q.bits > 4 else "u4", _param_shape(zp, q, split))
            node = ops.subtract(node, ops.convert(zc, ct))
        sshape = _param_shape(q.scales, q, split)
        if half:
            node = ops.multiply(node, ops.constant(np.asarray(q.scales, np.float32).reshape(sshape).astype(np.float16)))
        else:
            node = ops.multiply(node, self.scales(q.scales, sshape))
        if q.offsets is not None:
            node = ops.add(
                node, self.const(np.asarray(q.offsets, np.float32).reshape(_param_shape(q.offsets, q, split)))
            )
        if any(split):
            node = ops.reshape(node, self.ints(q.shape), False)
        if half:
            node = ops.convert(node, f32)
        self.encodings[name] = (
            etype + (" group-wise" if any(split) else "") + (" f16" if exact else " f16 (rounded)" if half else "")
        )
        return node.output(0)

    @encoder("codebook")
    def _codebook(self, name: str, q: QuantizedTensor):
        ov, ops = self.ov, self.ops
        cb = np.asarray(q.codebook, np.float32)
        codes = np.asarray(q.codes)
        n = cb.shape[-1]
        if cb.ndim == 3:  # per group of a 2-D weight: work in [C, G, group] and flatten at the end
            c, g = cb.shape[:2]
            shape, split = [c, g, codes.shape[1] // g], None
        else:
            shape, split = _blocking(q) if q.scales is not None else (list(q.shape), [False] * len(q.shape))
        if cb.ndim == 1 and n == 16 and q.bits == 4 and (np.array_equal(cb, OV_NF4) or self.nf4 == "native"):
            node = ops.convert(self._typed_const(codes, "nf4", shape), ov.Type.f32)
            self.encodings[name] = "nf4"
        else:
            # Gather from the flattened codebook: index = code + n * (the codebook row this element uses).
            idx = ops.convert(self._typed_const(codes, "u4" if q.bits <= 4 else "u8", shape), ov.Type.i32)
            if cb.ndim == 2:
                base = np.arange(cb.shape[0], dtype=np.int32) * n
                idx = ops.add(idx, self.const(base.reshape([-1 if d == q.axis else 1 for d in range(len(shape))])))
            elif cb.ndim == 3:
                idx = ops.add(idx, self.const((np.arange(c * g, dtype=np.int32) * n).reshape(c, g, 1)))
            node = ops.gather(self.const(cb.reshape(-1)), idx, self.const(np.int64(0)))
            self.encodings[name] = f"codebook[{n}] gather"
        if q.scales is not None:
            sc = np.asarray(q.scales, np.float32)
            pshape = [c, g, 1] if split is None else _param_shape(sc, q, split)
            node = ops.multiply(node, self.const(sc.reshape(pshape)))
        if list(shape) != list(q.shape):
            node = ops.reshape(node, self.ints(q.shape), False)
        return node.output(0)

    @encoder("vector")
    def _vector(self, name: str, q: QuantizedTensor):
        """Vector codes ``[R, O / R, G, K / G / d]`` (u4 / u8 / u16) + each codebook's entry offset, Gather'ed from
        the flattened codebooks ``[R * G * n, d]`` (float16 + Convert when every entry is a float16 value) and
        reshaped to ``[O, K]``: a copy of the IR's entries, exact."""
        ov, ops = self.ov, self.ops
        assert q.codebook is not None  # the vector scheme's codebooks (checked by the IR)
        r, g, n, d = q.codebook.shape
        rows, k = q.shape
        shape = [r, rows // r, g, q.group_size // d]
        codes = np.asarray(q.codes)
        if q.bits <= 8:
            cnode = self._typed_const(codes, "u4" if q.bits <= 4 else "u8", shape)
        else:
            cnode = ops.constant(np.ascontiguousarray(codes.reshape(shape).astype(np.uint16)))
        idx = ops.add(ops.convert(cnode, ov.Type.i32), self.const(vector_bases(q.codebook.shape, np.int32)))
        book = self.scales(np.asarray(q.codebook, np.float32).reshape(r * g * n, d), [r * g * n, d])
        node = ops.gather(book, idx, self.const(np.int64(0)))
        self.encodings[name] = f"vector codebook[{n}x{d}] gather" + (f" ({r * g} codebooks)" if r * g > 1 else "")
        return ops.reshape(node, self.ints([rows, k]), False).output(0)

    def scales(self, s: np.ndarray, shape: list[int]):
        """Scales as float16 + Convert when every one is a float16 value (exact: e.g. from
        ``quantize{scale_dtype=f16}``), else float32."""
        s = np.asarray(s, np.float32).reshape(shape)
        s16 = s.astype(np.float16)
        if np.isfinite(s16).all() and np.array_equal(s16.astype(np.float32), s):
            return self.ops.convert(self.ops.constant(s16), self.ov.Type.f32).output(0)
        return self.const(s)

    def fake_quant(self, out, v: Value):
        """FakeQuantize computing QuantizeLinear + DequantizeLinear of ``v.quant`` (per tensor)."""
        q = v.quant
        assert q is not None  # called for quantized activations only
        lo, hi = code_range(q.bits, q.signed)
        a = np.float32((lo - q.zero_point) * q.scale)
        b = np.float32((hi - q.zero_point) * q.scale)
        ca, cb = self.const(a), self.const(b)
        return self.ops.fake_quantize(out, ca, cb, ca, cb, hi - lo + 1).output(0)

    # ---------------------------------------------------------------------------------------------- driver
    def _widen_narrow(self, n: Node) -> dict[int, object]:
        """OpenVINO's CPU plugin saturates int8 / uint8 arithmetic (127 + 1 gives 127, -(-128) gives 127) where
        ONNX wraps: such a node computes in int32 and its outputs wrap back (Convert truncates). Its narrow inputs'
        environment entries are swapped for int32 ones; returns the entries to restore."""
        if n.domain or n.op_type not in _WRAP_NARROW or LOWERINGS.get(n.qualified_op) is None:
            return {}  # (a node through OpenVINO's ONNX frontend types its own inputs)
        saved = {}
        for v in n.inputs:
            if v is not None and v.dtype is not None and v.dtype.short in ("i8", "u8") and id(v) not in saved:
                x = self.get(v)
                saved[id(v)] = x
                self.env[id(v)] = self.ops.convert(x, self.ov.Type.i32).output(0)
        return saved

    def _narrow_back(self, n: Node, res):
        outs = res if isinstance(res, list) else [res]
        back = []
        for o, val in zip(n.outputs, outs):
            if o is not None and val is not None and o.dtype is not None and o.dtype.short in ("i8", "u8"):
                val = val.output(0) if hasattr(val, "output") else val
                val = self.ops.convert(val, self.ov.Type(o.dtype.numpy)).output(0)
            back.append(val)
        return back if isinstance(res, list) else back[0]

    def build(self):
        ov, ops = self.ov, self.ops
        g = self.model.graph
        params = []
        for v in g.inputs:
            if v.dtype is None or v.shape is None:
                raise UnsupportedError(f"input {v.name!r} needs a known dtype and rank")
            shape = ov.PartialShape([d if isinstance(d, int) else -1 for d in v.shape])
            p = ops.parameter(shape, ov.Type(v.dtype.numpy), name=v.name)
            p.output(0).get_tensor().set_names({v.name})
            params.append(p)
            out = p.output(0)
            self.env[id(v)] = self.fake_quant(out, v) if v.quant is not None else out
        graph_outputs = {id(o) for o in g.outputs}
        for n in g:
            fn = LOWERINGS.get(n.qualified_op) or (onnx_fallback if n.qualified_op in FALLBACK_OPS else None)
            if fn is None:
                raise UnsupportedError(f"node {n.name!r}: {n.qualified_op} is not supported by the openvino target")
            widened = self._widen_narrow(n)
            try:
                res = fn(self, n)
                if widened:
                    res = self._narrow_back(n, res)
            except UnsupportedError:
                raise
            except Exception as e:  # noqa: BLE001 - OpenVINO validation errors come as RuntimeError
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                why = (
                    "OpenVINO rejected it"
                    if isinstance(e, RuntimeError)
                    else f"the openvino target cannot lower this variant ({type(e).__name__})"
                )
                raise UnsupportedError(f"node {n.name!r} ({n.qualified_op}): {why}: {first}") from None
            finally:
                self.env.update(widened)
            outs = res if isinstance(res, list) else [res]
            missing = [
                o.name
                for k, o in enumerate(n.outputs)
                if o is not None and (k >= len(outs) or outs[k] is None) and (o.uses or id(o) in graph_outputs)
            ]
            if missing:
                raise UnsupportedError(
                    f"node {n.name!r} ({n.qualified_op}): the openvino target does not compute its "
                    f"output(s) {', '.join(map(repr, sorted(set(missing))))}"
                )
            for o, val in zip(n.outputs, outs):
                if o is None or val is None:
                    continue
                val = val.output(0) if hasattr(val, "output") else val
                self.env[id(o)] = self.fake_quant(val, o) if o.quant is not None else val
        results = []
        for o in g.outputs:
            val = self.get(o)
            r = ops.result(val)
            # a graph output that is a graph input (Identity) or another output keeps that value's names too: the
            # input is still fed by its name
            keep = (
                val.get_names()
                if val.get_node().get_type_name() == "Parameter" or any(x.input_value(0) == val for x in results)
                else set()
            )
            r.output(0).get_tensor().set_names(set(keep) | {o.name})
            r.set_friendly_name(o.name)
            results.append(r)
        return ov.Model(results, params, g.name or "edgec")


def _op(fn_name: str):
    return getattr(_ov()[1], fn_name)


# Arithmetic whose int8 / uint8 results OpenVINO saturates: computed in int32, wrapped back (OVBuilder._widen_narrow)
_WRAP_NARROW = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Abs",
        "Sum",
        "Mean",
        "MatMul",
        "ReduceSum",
        "ReduceProd",
        "ReduceSumSquare",
        "CumSum",
        "Pow",
    }
)


_BINARY = {
    "Add": "add",
    "Sub": "subtract",
    "Mul": "multiply",
    "Div": "divide",
    "Pow": "power",
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
    "And": "logical_and",
    "Or": "logical_or",
    "Max": "maximum",
    "Min": "minimum",
}
_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Sqrt": "sqrt",
    "Neg": "negative",
    "Abs": "abs",
    "Log": "log",
    "Not": "logical_not",
    "Floor": "floor",
    "Ceil": "ceiling",
}


@lowering(*_BINARY)
def _binary(b: OVBuilder, n: Node):
    if n.op_type in ("Max", "Min"):  # variadic (one or more inputs), folded pairwise
        vals = [b.get(v) for v in n.inputs if v is not None]
        if not vals:
            raise UnsupportedError(f"node {n.name!r} ({n.op_type}): needs at least one input")
        y = vals[0]
        for v in vals[1:]:
            y = getattr(b.ops, _BINARY[n.op_type])(y, v).output(0)
        return y
    if len(n.inputs) != 2 or any(v is None for v in n.inputs):
        raise UnsupportedError(f"node {n.name!r} ({n.op_type}): expects two inputs, has {len(n.inputs)}")
    x, y = b.get(n.arg(0)), b.get(n.arg(1))
    tx, ty = n.arg(0).dtype, n.arg(1).dtype
    if n.op_type == "Div" and tx is not None and not tx.is_float:
        d = b.ops.divide(x, y)
        d.set_attribute("m_pythondiv", False)  # ONNX integer Div truncates toward zero (Python's floors)
        return d
    if n.op_type == "Pow" and tx is not None and ty is not None and tx != ty:
        if not tx.is_float:  # int ** float: ONNX computes in the exponent's precision, then casts
            raise UnsupportedError(
                f"node {n.name!r} (Pow): an integer base ({tx.short}) with a {ty.short} exponent "
                "is not supported by the openvino target"
            )
        y = b.ops.convert(y, x.get_element_type())  # float ** int: the exponent is exact in the base's type
    return getattr(b.ops, _BINARY[n.op_type])(x, y)


@lowering(*_UNARY)
def _unary(b, n):
    return getattr(b.ops, _UNARY[n.op_type])(b.get(n.inputs[0]))


@lowering("Erf")
def _erf(b, n):
    """OpenVINO's CPU erf is off by about 1e-7 absolute near 0 (1e-5 comes out 1.7% low, 1e-8 as 0): below 0.01
    the series 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42) is used instead (its first dropped term, x^9/216, is
    below 1e-16 relative there, where OpenVINO's own error is below 3e-5)."""
    ops, v = b.ops, n.inputs[0]
    x = b.get(v)

    def c(k):
        return b.scalar(k, v)

    x2 = ops.multiply(x, x)
    poly = ops.add(c(-1.0 / 3), ops.multiply(x2, ops.add(c(0.1), ops.multiply(x2, c(-1.0 / 42)))))
    series = ops.multiply(ops.multiply(x, c(2.0 / np.sqrt(np.pi))), ops.add(c(1.0), ops.multiply(x2, poly)))
    return ops.select(ops.less(ops.abs(x), c(0.01)), series, ops.erf(x))


@lowering("Identity")
def _identity(b, n):
    return b.get(n.inputs[0])


@lowering("Reciprocal")
def _reciprocal(b, n):
    return b.ops.divide(b.scalar(1.0, n.inputs[0]), b.get(n.inputs[0]))


# IR dtypes the openvino target converts to and from exactly (others: float8 / float4 / 2-bit / strings).
_CAST_TYPES = frozenset({"f32", "f16", "f64", "bf16", "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "bool"})


@lowering("Cast")
def _cast(b, n):
    src, dst = n.inputs[0].dtype, n.output.dtype
    for what, t in (("from", src), ("to", dst)):
        if t is None or t.short not in _CAST_TYPES:
            to = n.attr("to")
            name = t.short if t is not None else (onnx_type_name(to) if isinstance(to, int) else "an unknown type")
            raise UnsupportedError(
                f"node {n.name!r} (Cast): casting {what} {name} is not supported by the openvino "
                f"target (supported: {', '.join(sorted(_CAST_TYPES))})"
            )
    return b.ops.convert(b.get(n.inputs[0]), ov_type(b.ov, dst))


def ov_type(ov, dtype):
    """The OpenVINO element type of an IR dtype."""
    name = {"bool": "boolean"}.get(dtype.short, dtype.short)
    if not hasattr(ov.Type, name):
        raise UnsupportedError(f"dtype {dtype.short} has no OpenVINO element type")
    return getattr(ov.Type, name)


@lowering("Reshape")
def _reshape(b, n):
    return b.ops.reshape(b.get(n.inputs[0]), b.get(n.inputs[1]), special_zero=not n.attr("allowzero", 0))


@lowering("Flatten")
def _flatten(b, n):
    x = n.inputs[0]
    axis = n.attr("axis", 1)
    axis = axis + x.rank if axis < 0 else axis  # ONNX allows axis == rank
    s = x.static_shape
    if s is not None:
        return b.ops.reshape(b.get(x), b.ints([int(np.prod(s[:axis], dtype=np.int64)), -1]), False)
    if axis == 0:
        return b.ops.reshape(b.get(x), b.ints([1, -1]), False)
    shp = b.ops.shape_of(b.get(x), "i64")
    head = b.ops.reduce_prod(b.ops.slice(shp, b.ints([0]), b.ints([axis]), b.ints([1])), b.ints([0]), True)
    return b.ops.reshape(b.get(x), b.ops.concat([head, b.ints([-1])], 0), False)


@lowering("Squeeze")
def _squeeze(b, n):
    axes = b.const_ints(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else n.attr("axes")
    if axes is None:
        return b.ops.squeeze(b.get(n.inputs[0]))
    return b.ops.squeeze(b.get(n.inputs[0]), b.ints(axes))


@lowering("Unsqueeze")
def _unsqueeze(b, n):
    axes = b.const_ints(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else n.attr("axes")
    return b.ops.unsqueeze(b.get(n.inputs[0]), b.ints(axes))


@lowering("Expand")
def _expand(b, n):
    return b.ops.broadcast(b.get(n.inputs[0]), b.get(n.inputs[1]), broadcast_spec="BIDIRECTIONAL")


@lowering("Transpose")
def _transpose(b, n):
    perm = n.attr("perm") or list(range(n.inputs[0].rank))[::-1]
    return b.ops.transpose(b.get(n.inputs[0]), b.ints(perm))


@lowering("Concat")
def _concat(b, n):
    return b.ops.concat([b.get(v) for v in n.inputs], n.attr("axis"))


@lowering("Slice")
def _slice(b, n):
    ins = n.inputs
    starts, ends = b.get(ins[1]), b.get(ins[2])
    k = ins[1].shape[0] if ins[1].shape else len(b.const_ints(ins[1]) or [])
    axes = b.get(ins[3]) if len(ins) > 3 and ins[3] is not None else b.ints(list(range(k)))
    steps = b.get(ins[4]) if len(ins) > 4 and ins[4] is not None else b.ints([1] * k)
    return b.ops.slice(b.get(ins[0]), starts, ends, steps, axes)


@lowering("Gather")
def _gather(b, n):
    return b.ops.gather(b.get(n.inputs[0]), b.get(n.inputs[1]), b.const(np.int64(n.attr("axis", 0))))


@lowering("GatherElements")
def _gather_elements(b, n):
    return b.ops.gather_elements(b.get(n.inputs[0]), b.get(n.inputs[1]), n.attr("axis", 0))


@lowering("GatherND")
def _gather_nd(b, n):
    return b.ops.gather_nd(b.get(n.inputs[0]), b.get(n.inputs[1]), n.attr("batch_dims", 0))


@lowering("Where")
def _where(b, n):
    return b.ops.select(*(b.get(v) for v in n.inputs))


@lowering("Shape")
def _shape(b, n):
    s = b.ops.shape_of(b.get(n.inputs[0]), "i64")
    start, end = n.attr("start", 0), n.attr("end", None)
    if start == 0 and end is None:
        return s
    rank = n.inputs[0].rank
    end = rank if end is None else end
    return b.ops.slice(s, b.ints([start]), b.ints([end]), b.ints([1]))


@lowering("Range")
def _range(b, n):
    start, limit, delta = (b.get(v) for v in n.inputs)
    return b.ops.range(start, limit, delta, b.ov.Type(n.output.dtype.numpy))


@lowering("ConstantOfShape")
def _constant_of_shape(b, n):
    val = n.attr("value")
    arr = np.asarray(val.numpy() if val is not None else np.zeros(1, np.float32)).reshape(-1)[:1]
    return b.ops.broadcast(b.const(arr.reshape(())), b.get(n.inputs[0]))


@lowering("Clip")
def _clip(b, n):
    x = b.get(n.inputs[0])
    lo_v = n.inputs[1] if len(n.inputs) > 1 else None
    hi_v = n.inputs[2] if len(n.inputs) > 2 else None
    if (lo_v is None or lo_v.is_const) and (hi_v is None or hi_v.is_const):
        lo = float(lo_v.numpy()) if lo_v is not None else -np.inf
        hi = float(hi_v.numpy()) if hi_v is not None else np.inf
        if n.inputs[0].dtype.is_float and lo <= hi:  # (lo > hi: ONNX gives hi everywhere, as below)
            return b.ops.clamp(x, max(lo, -3.4e38), min(hi, 3.4e38))
    y = x
    if lo_v is not None:
        y = b.ops.maximum(y, b.get(lo_v))
    if hi_v is not None:
        y = b.ops.minimum(y, b.get(hi_v))
    return y


@lowering("HardSigmoid")
def _hardsigmoid(b, n):
    x = n.inputs[0]
    return b.ops.hard_sigmoid(b.get(x), b.scalar(n.attr("alpha", 0.2), x), b.scalar(n.attr("beta", 0.5), x))


@lowering("HardSwish")
def _hardswish(b, n):
    return b.ops.hswish(b.get(n.inputs[0]))


@lowering("Softmax")
def _softmax(b, n):
    return b.ops.softmax(b.get(n.inputs[0]), n.attr("axis", -1))


@lowering("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(b, n):
    x = n.inputs[0]
    axes = b.const_ints(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else n.attr("axes")
    if not axes:  # absent or empty: every axis, or (noop_with_empty_axes) the input unchanged
        if n.attr("noop_with_empty_axes", 0):
            return b.get(x)
        if x.rank is None:
            raise UnsupportedError(f"node {n.name!r} ({n.op_type}): reducing every axis needs the input's rank")
        axes = list(range(x.rank))
    if x.dtype is not None and x.dtype.short == "bool" and n.op_type in ("ReduceMax", "ReduceMin"):
        # max = any, min = all (over an empty set: False / True, the identities ONNX gives)
        fn = "reduce_logical_or" if n.op_type == "ReduceMax" else "reduce_logical_and"
        return getattr(b.ops, fn)(b.get(x), b.ints(axes), bool(n.attr("keepdims", 1)))
    fn = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min"}[
        n.op_type
    ]
    y = getattr(b.ops, fn)(b.get(x), b.ints(axes), bool(n.attr("keepdims", 1))).output(0)
    if n.op_type not in ("ReduceMax", "ReduceMin"):
        return y
    # Over an empty set ONNX gives the identity of the reduction (-inf for max, +inf for min; the type's extreme
    # for integers); OpenVINO gives the type's finite lowest / highest.
    rank = x.rank
    dt = x.dtype.numpy
    xv = b.get(x)
    if x.dtype.is_float:
        # OpenVINO starts a max (min) at the type's finite lowest (highest): a set of only -inf (+inf) would give
        # that finite value
        inf = b.const(np.asarray(-np.inf if n.op_type == "ReduceMax" else np.inf, dt))
        all_inf = b.ops.reduce_logical_and(b.ops.equal(xv, inf), b.ints(axes), bool(n.attr("keepdims", 1)))
        y = b.ops.select(all_inf, inf, y).output(0)
    dims = [x.shape[a % rank] for a in axes] if x.shape is not None and rank else None
    if dims is not None and all(isinstance(d, int) and d > 0 for d in dims):
        return y
    if x.dtype.is_float:
        fill = -np.inf if n.op_type == "ReduceMax" else np.inf
    elif dt.kind in "iu":
        fill = np.iinfo(dt).min if n.op_type == "ReduceMax" else np.iinfo(dt).max
    else:
        raise UnsupportedError(f"node {n.name!r} ({n.op_type}): dtype {x.dtype.short} is not supported")
    shp = b.ops.shape_of(xv, "i64")
    count = b.ops.reduce_prod(
        b.ops.gather(shp, b.ints([a % rank for a in axes]), b.const(np.int64(0))), b.ints([0]), False
    )
    empty = b.ops.equal(count, b.const(np.int64(0)))
    return b.ops.select(empty, b.const(np.asarray(fill, dt)), y)


@lowering("MatMul")
def _matmul(b, n):
    return b.ops.matmul(b.get(n.inputs[0]), b.get(n.inputs[1]), False, False)


def _pads(n: Node, spatial: int) -> tuple[list[int], list[int]]:
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError(
            f"node {n.name!r}: auto_pad={n.attr('auto_pad')} is not supported; re-export with explicit pads"
        )
    if n.attr("auto_pad", "NOTSET") == "VALID":
        return [0] * spatial, [0] * spatial
    p = list(n.attr("pads", [0] * 2 * spatial))
    return p[:spatial], p[spatial:]


@lowering("Conv")
def _conv(b, n):
    x, w = n.inputs[0], n.inputs[1]
    if w.rank is None or w.shape is None:
        raise UnsupportedError(f"node {n.name!r} (Conv): the weight's shape must be known")
    spatial = w.rank - 2
    begin, end = _pads(n, spatial)
    strides = list(n.attr("strides", [1] * spatial))
    dil = list(n.attr("dilations", [1] * spatial))
    groups = n.attr("group", 1)
    wt = b.get(w)
    if groups == 1:
        y = b.ops.convolution(b.get(x), wt, strides, begin, end, dil)
    else:
        o, i = w.shape[0], w.shape[1]
        wg = b.ops.reshape(wt, b.ints([groups, o // groups, i, *w.shape[2:]]), False)
        y = b.ops.group_convolution(b.get(x), wg, strides, begin, end, dil)
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        y = b.ops.add(y, b.ops.reshape(b.get(n.inputs[2]), b.ints([1, -1] + [1] * spatial), False))
    return y


@lowering("MaxPool", "AveragePool")
def _pool(b, n):
    k = list(n.attr("kernel_shape"))
    begin, end = _pads(n, len(k))
    strides = list(n.attr("strides", [1] * len(k)))
    # ONNX's ceil mode drops a last window that would start in the end padding, as PyTorch does ("ceil_torch")
    rounding = "ceil_torch" if n.attr("ceil_mode", 0) else "floor"
    if n.op_type == "MaxPool":
        if n.attr("storage_order", 0):
            raise UnsupportedError(
                f"node {n.name!r} (MaxPool): storage_order=1 (column-major indices) is not "
                "supported by the openvino target"
            )
        # axis 0: indices into the whole input flattened row-major, as ONNX numbers them
        mp = b.ops.max_pool(
            b.get(n.inputs[0]),
            strides,
            list(n.attr("dilations", [1] * len(k))),
            begin,
            end,
            k,
            rounding,
            None,
            "i64",
            0,
        )
        return [mp.output(0), mp.output(1)]
    if any(d != 1 for d in n.attr("dilations", [1] * len(k))):
        raise UnsupportedError(f"node {n.name!r}: dilated AveragePool is not supported by the openvino target")
    # AvgPool-14 (AvgPool-16, which takes dilations, crashes the 2026.4 CPU plugin when compiled)
    import openvino.opset14 as opset14

    return opset14.avg_pool(b.get(n.inputs[0]), strides, begin, end, k, not n.attr("count_include_pad", 0), rounding)


@lowering("GlobalAveragePool")
def _gap(b, n):
    return b.ops.reduce_mean(b.get(n.inputs[0]), b.ints(list(range(2, n.inputs[0].rank))), True)


@lowering("BatchNormalization")
def _bn(b, n):
    if n.attr("training_mode", 0) or any(o is not None and (o.uses or o in n.graph.outputs) for o in n.outputs[1:]):
        raise UnsupportedError(
            f"node {n.name!r} (BatchNormalization): training mode (batch statistics, running "
            "mean / variance outputs) is not supported by the openvino target; export the model "
            "in inference mode"
        )
    x, g, beta, mean, var = (b.get(v) for v in n.inputs[:5])
    return b.ops.batch_norm_inference(x, g, beta, mean, var, n.attr("epsilon", 1e-5))


@lowering("LayerNormalization")
def _layernorm(b, n):
    x = n.inputs[0]
    if x.rank is None:
        raise UnsupportedError(f"node {n.name!r} (LayerNormalization): the input's rank must be known")
    if x.dtype is not None and x.dtype.short != "f32" and n.attr("stash_type", 1) == 1:
        raise UnsupportedError(
            f"node {n.name!r} (LayerNormalization): {x.dtype.short} input with float32 "
            "statistics (stash_type=1) is not supported by the openvino target"
        )
    axis = n.attr("axis", -1) % x.rank
    axes = b.ints(list(range(axis, x.rank)))
    eps = n.attr("epsilon", 1e-5)
    xv = b.get(x)
    y = b.ops.mvn(xv, axes, True, eps, "inside_sqrt")
    y = b.ops.multiply(y, b.get(n.inputs[1]))
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        y = b.ops.add(y, b.get(n.inputs[2]))
    outs = [y]
    if any(o is not None and (o.uses or o in n.graph.outputs) for o in n.outputs[1:]):
        # Mean and InvStdDev, with the normalized axes kept as 1
        mean = b.ops.reduce_mean(xv, axes, True)
        centered = b.ops.subtract(xv, mean)
        var = b.ops.reduce_mean(b.ops.multiply(centered, centered), axes, True)
        inv = b.ops.divide(b.scalar(1.0, x), b.ops.sqrt(b.ops.add(var, b.scalar(eps, x))))
        outs += [mean, inv]
    return outs


@lowering("edgec::RMSNorm")
def _rmsnorm(b, n):
    x = n.inputs[0]
    xv = b.get(x)
    ms = b.ops.reduce_mean(b.ops.multiply(xv, xv), b.ints([-1]), True)
    r = b.ops.sqrt(b.ops.add(ms, b.scalar(n.attr("epsilon", 1e-5), x)))
    return b.ops.multiply(b.ops.divide(xv, r), b.get(n.inputs[1]))


@lowering("edgec::Gelu")
def _gelu(b, n):
    return b.ops.gelu(b.get(n.inputs[0]), "tanh" if n.attr("approximate", "none") == "tanh" else "erf")


@lowering("edgec::Attention")
def _attention(b, n):
    q, k, v = (b.get(x) for x in n.inputs[:3])
    s = b.ops.matmul(q, k, False, True)
    s = b.ops.multiply(s, b.scalar(n.attr("scale", 1.0), n.inputs[0]))
    if len(n.inputs) > 3 and n.inputs[3] is not None:
        s = b.ops.add(s, b.get(n.inputs[3]))
    return b.ops.matmul(b.ops.softmax(s, -1), v, False, False)


@lowering("edgec::Linear")
def _linear(b, n):
    y = b.ops.matmul(b.get(n.inputs[0]), b.get(n.inputs[1]), False, True)
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        y = b.ops.add(y, b.get(n.inputs[2]))
    return y


# ---------------------------------------------------------------------------------------------- ONNX fallback
# ai.onnx ops without a native lowering that go node by node through OpenVINO's own ONNX frontend (see
# :func:`onnx_fallback`). The frontend of OpenVINO 2026.4 has a converter for each of them; left out are ops it
# has none for, control flow and sequences (the IR does not import them), random generators (no reproducible
# result) and the ops the ONNX backend node suite shows it computes wrongly (benchmarks/coverage.py): Attention
# (local windows, past key/values with causal masks), BitShift (signed inputs, shifts of the width or more), DFT
# (axis, onesided / real inputs), DynamicQuantizeLinear and QuantizeLinear (round some values to the neighbouring
# code), NonMaxSuppression (a box whose IoU equals the threshold), ReduceL1 / ReduceLogSum / ReduceLogSumExp (before
# opset 18 their axes attribute is ignored: everything is reduced; the decompose pass rewrites them exactly through
# ReduceSum); variants of others are refused by _FALLBACK_PROBLEMS.
FALLBACK_OPS = (
    frozenset(
        {
            "Acos",
            "Acosh",
            "AffineGrid",
            "ArgMax",
            "ArgMin",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "BitwiseAnd",
            "BitwiseNot",
            "BitwiseOr",
            "BitwiseXor",
            "BlackmanWindow",
            "CastLike",
            "Celu",
            "CenterCropPad",
            "Col2Im",
            "Compress",
            "ConvInteger",
            "ConvTranspose",
            "Cos",
            "Cosh",
            "CumSum",
            "DepthToSpace",
            "DequantizeLinear",
            "Dropout",
            "Einsum",
            "Elu",
            "EyeLike",
            "GRU",
            "Gelu",
            "Gemm",
            "GlobalLpPool",
            "GlobalMaxPool",
            "GridSample",
            "GroupNormalization",
            "HammingWindow",
            "HannWindow",
            "Hardmax",
            "InstanceNormalization",
            "IsInf",
            "IsNaN",
            "LRN",
            "LSTM",
            "LeakyRelu",
            "LogSoftmax",
            "LpNormalization",
            "LpPool",
            "MatMulInteger",
            "MaxRoiPool",
            "Mean",
            "MeanVarianceNormalization",
            "Mish",
            "Mod",
            "NegativeLogLikelihoodLoss",
            "NonZero",
            "OneHot",
            "PRelu",
            "Pad",
            "QLinearConv",
            "QLinearMatMul",
            "RMSNormalization",
            "RNN",
            "ReduceL2",
            "ReduceProd",
            "ReduceSumSquare",
            "Resize",
            "ReverseSequence",
            "RoiAlign",
            "RotaryEmbedding",
            "Round",
            "STFT",
            "Scatter",
            "ScatterElements",
            "ScatterND",
            "Selu",
            "Shrink",
            "Sign",
            "Sin",
            "Sinh",
            "Size",
            "SoftmaxCrossEntropyLoss",
            "Softplus",
            "Softsign",
            "SpaceToDepth",
            "Split",
            "Sum",
            "Swish",
            "Tan",
            "ThresholdedRelu",
            "Tile",
            "TopK",
            "Trilu",
            "Unique",
            "Upsample",
            "Xor",
        }
    )
    - LOWERINGS.ops()
)


def fallback_ops() -> frozenset[str]:
    return FALLBACK_OPS


def _resize_problem(n: Node) -> str | None:
    if n.attr("antialias", 0):
        return "antialias=1"
    if n.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return f"keep_aspect_ratio_policy={n.attr('keep_aspect_ratio_policy')}"
    if n.attr("exclude_outside", 0):
        return "exclude_outside=1"
    ctm = n.attr("coordinate_transformation_mode", "half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    if ctm in ("half_pixel_symmetric", "tf_crop_and_resize"):  # OpenVINO's ONNX frontend has neither
        return f"coordinate_transformation_mode={ctm}"
    if n.attr("mode", "nearest") == "cubic" and n.attr("cubic_coeff_a", -0.75) != -0.75:
        return f"cubic_coeff_a={n.attr('cubic_coeff_a')}"
    if n.attr("coordinate_transformation_mode", "half_pixel") == "align_corners" and n.attr("mode") != "nearest":
        # OpenVINO's align_corners linear / cubic is wrong when shrinking: allowed only when no axis shrinks
        x = n.arg(0)
        ins = list(n.inputs) + [None] * 4
        scales, sizes = ins[2], ins[3]
        if scales is not None and scales.is_const and scales.numpy().size:
            shrink = bool((np.asarray(scales.numpy()) < 1).any())
        elif sizes is not None and sizes.is_const and x.static_shape is not None:
            axes = n.attr("axes") or list(range(len(x.static_shape)))
            shrink = any(int(s) < x.static_shape[a] for a, s in zip(axes, np.asarray(sizes.numpy()).reshape(-1)))
        else:
            shrink = True
        if shrink:
            return "align_corners linear / cubic resizing that shrinks an axis (or with sizes not known)"
    return None


def _rnn_problem(n: Node) -> str | None:
    if n.attr("layout", 0):
        return "layout=1 (batch-major)"
    if n.op_type == "LSTM" and len(n.inputs) > 7 and n.inputs[7] is not None:
        return "peephole weights (input P)"
    return None


# Variants of fallback ops that OpenVINO 2026.4's ONNX frontend computes wrongly (the node suite's cases): refused.
_FALLBACK_PROBLEMS = {
    "Resize": _resize_problem,
    "LSTM": _rnn_problem,
    "GRU": _rnn_problem,
    "RNN": _rnn_problem,
    "RoiAlign": lambda n: "mode=max" if n.attr("mode", "avg") == "max" else None,
    "SpaceToDepth": lambda n: "mode=CRD" if n.attr("mode", "DCR") == "CRD" else None,
    # the frontend refuses these (decompose writes them out)
    "Mod": lambda n: (
        "fmod=0 of floats"
        if not int(n.attr("fmod", 0))
        and n.inputs[0] is not None
        and n.inputs[0].dtype is not None
        and n.inputs[0].dtype.is_float
        else None
    ),
    "Dropout": lambda n: "Dropout (the frontend's outputs do not match the node's)",
}


def _onnx_frontend():
    from openvino.frontend import FrontEndManager

    fe = FrontEndManager().load_by_framework("onnx")
    if fe is None:
        raise UnsupportedError("OpenVINO's ONNX frontend is not available in this installation")
    return fe


def onnx_fallback(b: OVBuilder, n: Node):
    """Lower ``n`` through OpenVINO's ONNX frontend: ``n`` alone as an ONNX model (its data inputs typed and
    shaped as the builder holds them, its constant inputs as initializers the frontend can fold, the model's
    opsets), converted, and its ops spliced into the model being built: each of the sub-model's Parameters is
    replaced by the builder's value for that input, its Results' inputs become ``n``'s outputs."""
    import io

    from onnx import helper, numpy_helper

    from ...ir.onnx_io import attribute_proto

    ov = b.ov
    where = f"node {n.name!r} ({n.qualified_op})"
    check = _FALLBACK_PROBLEMS.get(n.qualified_op)
    problem = check(n) if check is not None else None
    if problem:
        raise UnsupportedError(
            f"{where}: {problem} is not supported by the openvino target (OpenVINO's ONNX frontend "
            "computes it differently from ONNX)"
        )
    inputs, inits, names, fed = [], [], [], {}
    for j, v in enumerate(n.inputs):
        if v is None:
            names.append("")
            continue
        name = f"in{j}"
        names.append(name)
        if v.is_const and not isinstance(v.const, QuantizedTensor):
            inits.append(numpy_helper.from_array(np.asarray(v.numpy()), name))
            continue
        if v.dtype is None:
            raise UnsupportedError(f"{where}: input {v.name!r} needs a known dtype for OpenVINO's ONNX frontend")
        val = b.get(v)
        ps = val.get_partial_shape()
        shape = None if ps.rank.is_dynamic else [d.get_length() if d.is_static else None for d in ps]
        inputs.append(helper.make_tensor_value_info(name, v.dtype.onnx, shape))
        fed[name] = val
    outs = [f"out{k}" if o is not None else "" for k, o in enumerate(n.outputs)]
    try:
        attrs = [attribute_proto(k, a) for k, a in n.attributes.items()]
    except (TypeError, ValueError) as e:
        raise UnsupportedError(f"{where}: an attribute cannot be written for OpenVINO's ONNX frontend ({e})") from None
    node = helper.make_node(n.op_type, names, outs, name=n.name or n.op_type, domain=n.domain)
    node.attribute.extend(attrs)
    results = [
        helper.make_tensor_value_info(name, o.dtype.onnx, None)
        if o.dtype is not None and o.dtype.short != "nf4"
        else helper.make_empty_tensor_value_info(name)
        for name, o in zip(outs, n.outputs)
        if name
    ]
    graph = helper.make_graph([node], "edgec_fallback", inputs, results, inits)
    opsets = [helper.make_opsetid(d, int(ver)) for d, ver in b.model.opset_imports.items() if d in ("", n.domain)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="edgec")
    try:
        fe = _onnx_frontend()
        sub = fe.convert(fe.load(io.BytesIO(proto.SerializeToString())))
    except UnsupportedError:
        raise
    except Exception as e:  # noqa: BLE001 - the frontend reports every failure as a RuntimeError-like exception
        raise UnsupportedError(
            f"{where}: OpenVINO's ONNX frontend cannot convert it: {_frontend_reason(str(e))}"
        ) from None
    for p in sub.get_parameters():
        pname = next(iter(p.output(0).get_names() or {p.get_friendly_name()}))
        if pname not in fed:
            raise UnsupportedError(f"{where}: OpenVINO's ONNX frontend made an unexpected input {pname!r}")
        src = fed[pname]
        if p.get_element_type() != src.get_element_type():
            raise UnsupportedError(
                f"{where}: OpenVINO's ONNX frontend typed input {pname!r} as "
                f"{p.get_element_type().get_type_name()}, the model has "
                f"{src.get_element_type().get_type_name()}"
            )
        for target in list(p.output(0).get_target_inputs()):
            target.replace_source_output(src)
    got: dict[str, Any] = {}
    for r in sub.get_results():
        src = r.input_value(0)
        for name in r.output(0).get_names() | src.get_names():
            got.setdefault(name, src)
    for op in sub.get_ordered_ops():  # the sub-model's tensor names (in0, out0, ...) must not leak into the model
        if op.get_type_name() not in ("Parameter", "Result"):
            for o in op.outputs():
                o.get_tensor().set_names(set())
    res: list[Any] = []
    for name, o in zip(outs, n.outputs):
        if not name:
            res.append(None)
            continue
        val = got.get(name)
        if (
            val is not None
            and o.dtype is not None
            and o.dtype.short in _CAST_TYPES
            and val.get_element_type() != ov_type(ov, o.dtype)
        ):
            raise UnsupportedError(
                f"{where}: OpenVINO's ONNX frontend gives output {o.name!r} as "
                f"{val.get_element_type().get_type_name()}, the model has {o.dtype.short}"
            )
        res.append(val)
    return res


def _frontend_reason(msg: str) -> str:
    """The frontend's reason for a failed conversion, without its C++ source locations."""
    import re

    text = " ".join(msg.split())
    m = re.search(r"with a message: (.*?)(?: Summary:|$)", text)
    text = m.group(1) if m else text
    text = re.sub(r"(Check '.*?' failed at |Exception from )?src/\S+:\d+:\s*", "", text)
    return text[:400]

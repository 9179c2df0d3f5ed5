"""Lowering of a model's integer ops (:mod:`edgec.ir.integer`) to the HVX kernels of :mod:`.qkernels`.

``HexagonBuilder`` is the Relax builder of :mod:`edgec.api.relax` plus one hook: each :class:`IntOp` becomes

* a *prep* kernel (TE, fused by TVM with whatever float ops precede it) that quantizes the float input into
  the activation layout, unless the producer already wrote the codes there (a requantizing epilogue);
* one call of its integer kernel, with the weights packed for ``vrmpy`` and the per-channel epilogue
  constants in the weights blob.

On v68 and later, float Linear and Conv layers become HVX float kernels (``float_hvx``).
"""

from __future__ import annotations

import numpy as np

from ...ir import Node
from ...ir.integer import IntOp, chained, plan
from . import HVX_LIMITS
from ...api.relax import RelaxBuilder, safe_name
from .qkernels import LEFT, ConvSpec, Layout, conv_kernel, float_conv_kernel, float_linear_kernel


def _conv_geometry(c: IntOp) -> tuple[int, ...]:
    """(kh, kw, stride, pad_t, pad_l, pad_b, pad_r, oh, ow)."""
    n = c.node
    kh, kw = (int(d) for d in c.wq.shape[2:])
    s = int(n.attr("strides", [1, 1])[0])
    pt, pl, pb, pr = (int(p) for p in n.attr("pads", [0, 0, 0, 0]))
    ys = n.outputs[0].static_shape
    assert ys is not None  # plan() takes only nodes with a static output shape
    _, _, oh, ow = ys
    return kh, kw, s, pt, pl, pb, pr, int(oh), int(ow)


def _image(c: IntOp) -> tuple[int, int, int]:
    """The input as an image (C, H, W): NCHW for a conv, ``[M, K]`` as ``K x 1 x M`` for a Linear."""
    xs = c.x.static_shape
    assert xs is not None  # plan() takes only inputs with a static shape
    if c.kind == "linear":
        return int(xs[-1]), 1, int(np.prod(xs[:-1]))
    return int(xs[1]), int(xs[2]), int(xs[3])


def _reads(c: IntOp) -> tuple[int, int]:
    """(margin rows needed, word columns read up to) of ``c`` on its input."""
    C, H, W = _image(c)
    if c.kind == "linear":
        return 0, Layout(C, H, W).reads_to(W, 1, 1, 0)
    kh, kw, s, pt, pl, pb, pr, oh, ow = _conv_geometry(c)
    return max(pt, pb), Layout(C, H, W).reads_to(ow, s, kw, pl)


def pack_weights(c: IntOp) -> np.ndarray:
    """int8 ``[O, taps, 4]``: each output channel's weights as the 4-byte words ``vrmpy`` multiplies."""
    O = c.cout
    if c.kind == "linear":
        k = c.wq.shape[1]
        w = np.zeros((O, -(-k // 4) * 4), np.int8)
        w[:, :k] = c.wq
        return w.reshape(O, -1, 4)
    if c.kind == "dwconv":
        kh, kw = c.wq.shape[2:]
        w = np.zeros((O, kh * kw, 4), np.int8)
        w[np.arange(O), :, np.arange(O) % 4] = c.wq.reshape(O, kh * kw)
        return w
    _, C, kh, kw = c.wq.shape
    c4 = -(-C // 4)
    w = np.zeros((O, c4 * 4, kh, kw), np.int8)
    w[:, :C] = c.wq
    return np.ascontiguousarray(w.reshape(O, c4, 4, kh, kw).transpose(0, 3, 4, 1, 2).reshape(O, kh * kw * c4, 4))


def epilogue_consts(c: IntOp) -> tuple[np.ndarray, np.ndarray]:
    """(int32 ``[O, 4]``: B, m, s, rnd; float32 ``[O, 2]``: S, b). ``B`` folds the input zero point
    (``sum((u - z) w) = sum(u w) - z sum(w)``) and, when requantizing, the bias in accumulator units."""
    pi = np.zeros((c.cout, 4), np.int64)
    pi[:, 0] = -c.zx * c.wsum()
    if c.fused is not None:
        bq, m, s, rnd = c.requant()
        pi[:, 0] += bq
        pi[:, 1], pi[:, 2], pi[:, 3] = m, s, rnd
    if np.abs(pi).max() >= 1 << 31:
        from ...errors import UnsupportedError

        raise UnsupportedError(
            f"hexagon: node {c.node.name!r}: its bias / zero-point correction does not fit the "
            "int32 accumulator (a huge bias against tiny scales); compile with hexagon{int8=false} "
            "to simulate this model's int8 activations in float"
        )
    return pi.astype(np.int32), np.stack([c.S(), c.bias], 1).astype(np.float32)


class HexagonBuilder(RelaxBuilder):
    """The cpu target's Relax builder with :class:`IntOp` nodes lowered to the integer HVX kernels."""

    def __init__(
        self, model, integer: bool = True, float_hvx: bool = False, fallback_ops: frozenset[str] = frozenset()
    ):
        super().__init__(model, fallback_ops=fallback_ops)
        self.float_hvx = float_hvx
        self.ops = plan(model, HVX_LIMITS) if integer else {}
        self.chained = chained(self.ops)
        self.codes: dict[int, object] = {}  # value -> Relax var holding its codes, in layouts[value]
        self.layouts: dict[int, Layout] = {}
        readers: dict[int, list[IntOp]] = {}
        for c in self.ops.values():
            readers.setdefault(id(c.x), []).append(c)
        for key, cs in readers.items():
            C, H, W = _image(cs[0])
            p = max(_reads(c)[0] for c in cs)
            self.layouts[key] = Layout(C, H, W, p=p, need=max(_reads(c)[1] for c in cs))
        self.kernels: list[str] = []

    def lower_special(self, n: Node) -> bool:
        if id(n) in self.chained:
            return True  # a Relu / Clip folded into its producer's requantizing epilogue
        c = self.ops.get(id(n))
        if c is None:
            return self.float_hvx and (self._float_linear(n) or self._float_conv(n))
        from tvm import relax

        x = self._codes_of(c)
        src = self.layouts[id(c.x)]
        C, H, W = _image(c)
        geo: tuple[int, ...]
        if c.kind == "linear":
            geo = (1, 1, 1, 0, 0, 0, 0, 1, W)
        else:
            geo = _conv_geometry(c)
        kh, kw, s, pt, pl, _, _, oh, ow = geo
        pi, pf = epilogue_consts(c)
        name = f"q{len(self.kernels)}_{safe_name(n.name)}"
        dst = self.layouts[id(c.fused)] if c.fused is not None else None
        ys = n.outputs[0].static_shape
        assert ys is not None  # plan() takes only nodes with a static output shape
        spec = ConvSpec(
            name,
            src,
            c.cout,
            kh,
            kw,
            s,
            pt,
            pl,
            oh,
            ow,
            depthwise=c.kind == "dwconv",
            dst=dst,
            float_shape=tuple(int(d) for d in ys),
            linear=c.kind == "linear",
            zero=c.zv if c.fused is not None else 0,
            lo=c.lo,
            hi=c.hi,
        )
        gv = self.bb.add_func(conv_kernel(spec), name)
        self.kernels.append(name)
        args = [x, relax.const(pack_weights(c), "int8"), relax.const(pi, "int32")]
        if dst is None:
            args.append(relax.const(pf, "float32"))
            sinfo = relax.TensorType(list(spec.float_shape), "float32")
        else:
            sinfo = relax.TensorType(dst.shape, "uint8")
        y = self.emit(relax.call_tir(gv, relax.Tuple(args), sinfo))
        if dst is not None:
            self.codes[id(c.fused)] = y
        else:
            o = n.outputs[0]
            self.env[id(o)] = self.fake_quant(y, o) if o.quant is not None else y
        return True

    def _codes_of(self, c: IntOp):
        """The Relax var holding ``c``'s input codes in its layout (a prep kernel from the float value unless a
        requantizing producer wrote them)."""
        key = id(c.x)
        if key in self.codes:
            return self.codes[key]
        from tvm import te, tirx

        L = self.layouts[key]
        q = c.xq
        xf = self.get(c.x)
        if c.kind == "linear":
            xf = self.emit(self.relax.op.reshape(xf, [L.w, L.c]))
        zc = c.zx
        lo, hi = (-128, 127) if q.signed else (0, 255)
        off = 128 if q.signed else 0
        C, H, W, P = L.c, L.h, L.w, L.p
        linear = c.kind == "linear"

        def prep(x):
            def f(r, c4, w, j):
                ch, h, col = c4 * 4 + j, r - P, w - LEFT
                ok = tirx.all(ch < C, h >= 0, h < H, col >= 0, col < W)
                chs = tirx.min(ch, C - 1)
                hs = tirx.max(tirx.min(h, H - 1), 0)
                cs = tirx.max(tirx.min(col, W - 1), 0)
                v = x[cs, chs] if linear else x[0, chs, hs, cs]
                code = tirx.nearbyint(v / tirx.const(q.scale, "float32")) + tirx.const(float(q.zero_point), "float32")
                code = tirx.max(tirx.min(code, tirx.const(float(hi), "float32")), tirx.const(float(lo), "float32"))
                u = (code.astype("int32") + off).astype("uint8")
                return tirx.if_then_else(ok, u, tirx.const(zc, "uint8"))

            return te.compute(L.shape, f, name="quantize_pack")

        y = self.bb.emit_te(prep, xf, primfunc_name_hint="quantize_pack")
        self.codes[key] = y
        return y

    def _float_linear(self, n: Node) -> bool:
        """A float ``edgec::Linear`` with constant float weights as an HVX float kernel (v68 qfloat, v73+
        IEEE float); anything else (quantized weights, no static shape) goes the generic way."""
        from ...ir import QuantizedTensor

        if n.qualified_op != "edgec::Linear":
            return False
        x, w = n.arg(0), n.arg(1)
        b = n.inputs[2] if len(n.inputs) > 2 else None
        if (
            not w.is_const
            or isinstance(w.const, QuantizedTensor)
            or w.rank != 2
            or x.static_shape is None
            or (b is not None and (not b.is_const or isinstance(b.const, QuantizedTensor)))
        ):
            return False
        relax = self.relax
        wa = np.asarray(w.numpy(), np.float32)
        N, K = wa.shape
        M = int(np.prod(x.static_shape[:-1]))
        lanes = 32
        npad = -(-N // lanes) * lanes
        wt = np.zeros((K, npad), np.float32)
        wt[:, :N] = wa.T
        bp = np.zeros(npad, np.float32)
        if b is not None:
            bp[:N] = np.asarray(b.numpy(), np.float32).reshape(-1)
        name = f"f{len(self.kernels)}_{safe_name(n.name)}"
        gv = self.bb.add_func(float_linear_kernel(M, K, N, lanes), name)
        self.kernels.append(name)
        xf = self.emit(relax.op.reshape(self.get(x), [M, K]))
        y = self.emit(
            relax.call_tir(
                gv,
                relax.Tuple([xf, relax.const(wt, "float32"), relax.const(bp, "float32")]),
                relax.TensorType([M, N], "float32"),
            )
        )
        o = n.outputs[0]
        assert o.static_shape is not None  # the output of a Linear on a static input and a constant weight
        y = self.emit(relax.op.reshape(y, list(o.static_shape)))
        self.env[id(o)] = self.fake_quant(y, o) if o.quant is not None else y
        return True

    def _float_conv(self, n: Node) -> bool:
        """A float Conv2d (batch 1, group 1, dilation 1, constant float weights) as an HVX float kernel."""
        from ...ir import QuantizedTensor

        if n.qualified_op != "Conv":
            return False
        x, w = n.arg(0), n.arg(1)
        b = n.inputs[2] if len(n.inputs) > 2 else None
        xs, ys = x.static_shape, n.outputs[0].static_shape
        if (
            not w.is_const
            or isinstance(w.const, QuantizedTensor)
            or w.rank != 4
            or xs is None
            or ys is None
            or xs[0] != 1
            or int(n.attr("group", 1)) != 1
            or any(d != 1 for d in n.attr("dilations", [1, 1]))
            or n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET")
            or (b is not None and (not b.is_const or isinstance(b.const, QuantizedTensor)))
        ):
            return False
        st = [int(v) for v in n.attr("strides", [1, 1])]
        if st[0] != st[1]:
            return False
        relax = self.relax
        wa = np.asarray(w.numpy(), np.float32)
        O, C, KH, KW = wa.shape
        lanes = 32
        opad = -(-O // lanes) * lanes
        wt = np.zeros((C, KH, KW, opad), np.float32)
        wt[..., :O] = wa.transpose(1, 2, 3, 0)
        bp = np.zeros(opad, np.float32)
        if b is not None:
            bp[:O] = np.asarray(b.numpy(), np.float32).reshape(-1)
        pads = [int(p) for p in n.attr("pads", [0, 0, 0, 0])]
        name = f"f{len(self.kernels)}_{safe_name(n.name)}"
        f = float_conv_kernel(
            C, int(xs[2]), int(xs[3]), O, KH, KW, st[0], (pads[0], pads[1]), int(ys[2]), int(ys[3]), lanes
        )
        gv = self.bb.add_func(f, name)
        self.kernels.append(name)
        y = self.emit(
            relax.call_tir(
                gv,
                relax.Tuple([self.get(x), relax.const(wt, "float32"), relax.const(bp, "float32")]),
                relax.TensorType(list(ys), "float32"),
            )
        )
        o = n.outputs[0]
        self.env[id(o)] = self.fake_quant(y, o) if o.quant is not None else y
        return True

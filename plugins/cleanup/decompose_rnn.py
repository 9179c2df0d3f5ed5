"""decompose rules for ONNX's recurrent ops RNN, GRU and LSTM (onnx gives them no function body).

Each is unrolled over its static sequence length into MatMul / Add / Mul / Sub / activations / Slice / Concat /
Unsqueeze / Transpose, in the model's opset, exactly as the operator spec computes it (onnx.defs' LSTM / GRU / RNN
docs; onnx.reference's op_lstm / op_gru / op_rnn for the defaults):

- the input projections of every step are one MatMul per gate (X [seq, batch, in] @ W_gate^T, plus Wb + Rb), each
  step slices its row and adds H(t-1) @ R_gate^T (and LSTM's peepholes); a reverse direction walks t from the end
  and writes Y at the step's own position;
- ``layout`` 1 is a Transpose of X / initial_h / initial_c in, and of Y / Y_h / Y_c out;
- ``activations`` (case-insensitive, per direction: RNN f, GRU f g, LSTM f g h) are the spec's list: Relu, Tanh,
  Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus, each written in
  core ops by its documented formula. ``activation_alpha`` / ``activation_beta`` are consumed in the order of the
  activations by those that take them (as onnxruntime reads the spec's "consumed in the order of activation
  functions"); a missing value takes the corresponding ONNX operator's default (LeakyRelu 0.01, HardSigmoid 0.2 /
  0.5, Elu 1.0). Affine, ScaledTanh and ThresholdedRelu have no agreed default (no such ONNX operator today; the
  runtimes differ), so a node that leaves theirs out is not rewritten;
- ``clip`` bounds every gate's input to its activation (after biases and peepholes) to [-clip, clip]; LSTM's cell
  state itself, the input of h, is not clipped (onnxruntime, OpenVINO);
- ``sequence_lens`` absent, constant or given at run time: a batch entry shorter than the sequence keeps its state
  past its length and its Y rows there are 0 (Where on per-step masks, constants when the lengths are; a reverse
  direction starts at the entry's own last step). An entry of length 0 has Y_h (and Y_c) 0, as onnxruntime
  computes it (the spec leaves it open; the holding rule alone would give initial_h).

A rule returns None (the node stays, and the target's check names it) when a shape it needs is not static, the
unrolled size exceeds :data:`MAX_STEPS`, or the node uses a variant above that it cannot compute exactly.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...ir import Node, Value
from .decompose import _Rewriter, rule

MAX_STEPS = 4096  # sequence length x directions unrolled at most

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# activation -> (takes alpha, takes beta, default alpha, default beta); None: no agreed default (refused if absent)
_ACTS: dict[str, tuple[bool, bool, float | None, float | None]] = {
    "relu": (False, False, None, None),
    "tanh": (False, False, None, None),
    "sigmoid": (False, False, None, None),
    "affine": (True, True, None, None),
    "leakyrelu": (True, False, 0.01, None),
    "thresholdedrelu": (True, False, None, None),
    "scaledtanh": (True, True, None, None),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, None),
    "softsign": (False, False, None, None),
    "softplus": (False, False, None, None),
}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _activations(n: Node, k: int, nd: int) -> list[tuple[str, float, float]] | None:
    """(name, alpha, beta) per direction and slot: ``k * nd`` entries, or None for a list the rule cannot take."""
    raw = n.attr("activations")
    names = [_text(a).lower() for a in raw] if raw is not None else [a.lower() for a in _DEFAULT_ACTS[n.op_type]] * nd
    if len(names) != k * nd or any(a not in _ACTS for a in names):
        return None
    alphas = [float(a) for a in (n.attr("activation_alpha") or [])]
    betas = [float(b) for b in (n.attr("activation_beta") or [])]
    out = []
    for name in names:
        takes_a, takes_b, da, db = _ACTS[name]
        a = b = 0.0
        if takes_a:
            if alphas:
                a = alphas.pop(0)
            elif da is None:
                return None
            else:
                a = da
        if takes_b:
            if betas:
                b = betas.pop(0)
            elif db is None:
                return None
            else:
                b = db
        out.append((name, a, b))
    return out


class _Unroll:
    """Shared building blocks of the three rules: constants in X's dtype, slices, activations, clip."""

    def __init__(self, r: _Rewriter, opset: int, dt: np.dtype, clip: float | None):
        self.r, self.opset, self.dt, self.clip = r, opset, dt, clip

    def c(self, v) -> Value:
        return self.r.const(np.array(v, self.dt))

    def i64(self, v) -> Value:
        return self.r.const(np.array(v, np.int64))

    def op(self, op_type: str, *inputs: Value | None, **attrs) -> Value:
        return self.r.op(op_type, list(inputs), **attrs)

    def slice(self, x: Value, starts: list[int], ends: list[int], axes: list[int]) -> Value:
        return self.op("Slice", x, self.i64(starts), self.i64(ends), self.i64(axes))

    def unsqueeze(self, x: Value, axis: int) -> Value:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.i64([axis]))
        return self.op("Unsqueeze", x, axes=[axis])

    def concat(self, parts: list[Value], axis: int) -> Value:
        return parts[0] if len(parts) == 1 else self.r.op("Concat", list(parts), axis=axis)

    def transpose(self, x: Value, perm: list[int]) -> Value:
        return self.op("Transpose", x, perm=perm)

    def act(self, x: Value, spec: tuple[str, float, float]) -> Value:
        """The spec's activation formula; ``clip`` first bounds its input."""
        if self.clip is not None:
            x = self.op("Min", self.op("Max", x, self.c(-self.clip)), self.c(self.clip))
        name, a, b = spec
        if name in ("relu", "tanh", "sigmoid"):
            return self.op({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[name], x)
        if name == "affine":  # alpha * x + beta
            return self.op("Add", self.op("Mul", x, self.c(a)), self.c(b))
        if name == "leakyrelu":  # x if x >= 0 else alpha * x
            return self.op("Where", self.op("Less", x, self.c(0.0)), self.op("Mul", x, self.c(a)), x)
        if name == "thresholdedrelu":  # x if x >= alpha else 0
            return self.op("Where", self.op("Less", x, self.c(a)), self.c(0.0), x)
        if name == "scaledtanh":  # alpha * Tanh(beta * x)
            return self.op("Mul", self.c(a), self.op("Tanh", self.op("Mul", x, self.c(b))))
        if name == "hardsigmoid":  # min(max(alpha * x + beta, 0), 1)
            lin = self.op("Add", self.op("Mul", x, self.c(a)), self.c(b))
            return self.op("Min", self.op("Max", lin, self.c(0.0)), self.c(1.0))
        if name == "elu":  # x if x >= 0 else alpha * (e^x - 1)
            neg = self.op("Mul", self.c(a), self.op("Sub", self.op("Exp", x), self.c(1.0)))
            return self.op("Where", self.op("Less", x, self.c(0.0)), neg, x)
        if name == "softsign":  # x / (1 + |x|)
            return self.op("Div", x, self.op("Add", self.op("Abs", x), self.c(1.0)))
        assert name == "softplus", name  # _activations admits only the names above
        return self.op("Log", self.op("Add", self.op("Exp", x), self.c(1.0)))  # log(1 + e^x)


class _Node:
    """What every rule reads from the node: static sizes, the per-direction inputs, the step masks."""

    def __init__(
        self,
        u: _Unroll,
        n: Node,
        x: Value,
        seq: int,
        batch: int,
        hidden: int,
        nd: int,
        layout: int,
        lens: np.ndarray | Value | None,
    ):
        self.u, self.n, self.seq, self.batch, self.hidden, self.nd, self.layout = u, n, seq, batch, hidden, nd, layout
        self.gates = _GATES[n.op_type]
        # X as [seq, batch, in]
        self.x = u.transpose(x, [1, 0, 2]) if layout else x
        self.masks: list[Value | None] = [None] * seq
        self.started: Value | None = None  # [1, batch, 1]: the entries of a length above 0
        if isinstance(lens, np.ndarray):
            for t in range(seq):
                m = (t < lens).reshape(1, batch, 1)
                self.masks[t] = None if m.all() else u.r.const(m)
            if (lens < 1).any():
                self.started = u.r.const((lens > 0).reshape(1, batch, 1))
        elif lens is not None:
            lv = u.op("Reshape", u.op("Cast", lens, to=onnx.TensorProto.INT64), u.i64([1, batch, 1]))
            self.masks = [u.op("Less", u.i64(t), lv) for t in range(seq)]
            self.started = u.op("Greater", lv, u.i64(0))

    def state(self, k: int, d: int) -> Value:
        """initial_h (k=5) or initial_c (k=6) of direction d as [1, batch, hidden]; zeros when absent."""
        v = self.n.inputs[k] if len(self.n.inputs) > k else None
        if v is None:
            return self.u.c(np.zeros((1, self.batch, self.hidden)))
        if self.layout:
            v = self.u.transpose(v, [1, 0, 2])
        return self.u.slice(v, [d], [d + 1], [0])

    def weight_t(self, k: int, d: int, g: int) -> Value:
        """Gate g of W (k=1) or R (k=2) of direction d, transposed: [1, in or hidden, hidden]."""
        h = self.hidden
        w = self.u.slice(self.n.arg(k), [d, g * h], [d + 1, (g + 1) * h], [0, 1])
        return self.u.transpose(w, [0, 2, 1])

    def bias(self, d: int, part: int) -> Value | None:
        """Slice ``part`` of B (W biases 0..gates-1, R biases gates..2*gates-1) of direction d: [1, hidden]."""
        b = self.n.inputs[3] if len(self.n.inputs) > 3 else None
        if b is None:
            return None
        h = self.hidden
        return self.u.slice(b, [d, part * h], [d + 1, (part + 1) * h], [0, 1])

    def projections(self, d: int, g: int, with_r_bias: bool = True) -> list[Value]:
        """X @ W_g^T + Wb_g (+ Rb_g) for every step: a [1, batch, hidden] slice per t."""
        u = self.u
        p = u.op("MatMul", self.x, self.weight_t(1, d, g))
        wb = self.bias(d, g)
        if wb is not None:
            rb = self.bias(d, self.gates + g) if with_r_bias else None
            p = u.op("Add", p, u.op("Add", wb, rb) if rb is not None else wb)
        return [u.slice(p, [t], [t + 1], [0]) for t in range(self.seq)]

    def order(self, d: int) -> range:
        reverse = d == 1 or _text(self.n.attr("direction", "forward")) == "reverse"
        return range(self.seq - 1, -1, -1) if reverse else range(self.seq)

    def hold(self, t: int, new: Value, old: Value) -> Value:
        """The state after step t: ``new`` where the batch entry's sequence is still running, else ``old``."""
        m = self.masks[t]
        return new if m is None else self.u.op("Where", m, new, old)

    def emit(self, t: int, h: Value) -> Value:
        """Y's row at step t: ``h``, or 0 past the entry's length."""
        m = self.masks[t]
        return h if m is None else self.u.op("Where", m, h, self.u.c(0.0))

    def outputs(self, ys: list[list[Value]], finals: list[list[Value]]) -> list[Value]:
        """Y [seq, nd, batch, hidden] from the per-direction rows (in time order), and each final state as
        [nd, batch, hidden] (layout 1: [batch, seq, nd, hidden] and [batch, nd, hidden])."""
        u = self.u
        y = u.concat([u.unsqueeze(u.concat(rows, 0), 1) for rows in ys], 1)
        if self.started is not None:  # a sequence of length 0 has no last state: 0
            zero = u.c(0.0)
            finals = [[u.op("Where", self.started, v, zero) for v in states] for states in finals]
        outs = [y] + [u.concat(states, 0) for states in finals]
        if self.layout:
            outs = [u.transpose(outs[0], [2, 0, 1, 3])] + [u.transpose(o, [1, 0, 2]) for o in outs[1:]]
        return outs[: len(self.n.outputs)]


def _setup(r: _Rewriter, n: Node, opset: int) -> tuple[_Node, list[tuple[str, float, float]]] | None:
    """Checks the node is one the rules compute exactly, and gathers what they share."""
    ins = list(n.inputs) + [None] * (8 - len(n.inputs))
    x, w, rr = ins[0], ins[1], ins[2]
    if x is None or w is None or rr is None or x.dtype is None or not x.dtype.is_float:
        return None
    xs, ws, rs = x.static_shape, w.static_shape, rr.static_shape
    if xs is None or ws is None or rs is None or len(xs) != 3 or len(ws) != 3 or len(rs) != 3:
        return None
    layout = int(n.attr("layout", 0))
    direction = _text(n.attr("direction", "forward"))
    if layout not in (0, 1) or direction not in ("forward", "reverse", "bidirectional"):
        return None
    nd = 2 if direction == "bidirectional" else 1
    seq, batch = (xs[1], xs[0]) if layout else (xs[0], xs[1])
    hidden, k = rs[2], _GATES[n.op_type]
    if n.attr("hidden_size") is not None and int(n.attr("hidden_size")) != hidden:
        return None
    if ws[0] != nd or rs[0] != nd or ws[1] != k * hidden or rs[1] != k * hidden or ws[2] != xs[2]:
        return None
    if seq < 1 or seq * nd > MAX_STEPS or any(v is not None and v.dtype != x.dtype for v in ins[:4] + ins[5:]):
        return None
    if n.op_type == "LSTM" and len(n.outputs) > 3 or n.op_type != "LSTM" and len(n.outputs) > 2:
        return None
    lens: np.ndarray | Value | None = None
    if ins[4] is not None:
        sl = ins[4]
        if sl.is_const:
            lens = np.asarray(sl.numpy()).reshape(-1).astype(np.int64)
            if lens.shape != (batch,) or (lens < 0).any() or (lens > seq).any():
                return None
        elif sl.static_shape is not None and tuple(sl.static_shape) == (batch,) and sl.dtype is not None:
            lens = sl
        else:
            return None
    acts = _activations(n, len(_DEFAULT_ACTS[n.op_type]), nd)
    if acts is None:
        return None
    clip = n.attr("clip")
    u = _Unroll(r, opset, x.dtype.numpy, float(clip) if clip is not None else None)
    return _Node(u, n, x, seq, batch, hidden, nd, layout, lens), acts


@rule("RNN")
def _rnn(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Ht = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Wbi + Rbi)."""
    s = _setup(r, n, opset)
    if s is None:
        return None
    nn, acts = s
    u = nn.u
    ys, finals = [], []
    for d in range(nn.nd):
        xw = nn.projections(d, 0)
        ri = nn.weight_t(2, d, 0)
        h = nn.state(5, d)
        rows: list[Value | None] = [None] * nn.seq
        for t in nn.order(d):
            new = u.act(u.op("Add", xw[t], u.op("MatMul", h, ri)), acts[d])
            rows[t] = nn.emit(t, new)
            h = nn.hold(t, new, h)
        ys.append([v for v in rows if v is not None])  # every step wrote its row
        finals.append(h)
    return nn.outputs(ys, [finals])


@rule("GRU")
def _gru(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """zt = f(Xt*(Wz^T) + Ht-1*(Rz^T) + Wbz + Rbz); rt = f(Xt*(Wr^T) + Ht-1*(Rr^T) + Wbr + Rbr);
    ht = g(Xt*(Wh^T) + (rt (.) Ht-1)*(Rh^T) + Rbh + Wbh), or with linear_before_reset
    ht = g(Xt*(Wh^T) + (rt (.) (Ht-1*(Rh^T) + Rbh)) + Wbh); Ht = (1 - zt) (.) ht + zt (.) Ht-1."""
    s = _setup(r, n, opset)
    if s is None:
        return None
    nn, acts = s
    u = nn.u
    lbr = int(n.attr("linear_before_reset", 0))
    ys, finals = [], []
    for d in range(nn.nd):
        f, g = acts[2 * d], acts[2 * d + 1]
        xz, xr = nn.projections(d, 0), nn.projections(d, 1)
        xh = nn.projections(d, 2, with_r_bias=not lbr)
        rz, rr, rh = (nn.weight_t(2, d, k) for k in range(3))
        rbh = nn.bias(d, 5) if lbr else None
        h = nn.state(5, d)
        rows: list[Value | None] = [None] * nn.seq
        for t in nn.order(d):
            z = u.act(u.op("Add", xz[t], u.op("MatMul", h, rz)), f)
            rt = u.act(u.op("Add", xr[t], u.op("MatMul", h, rr)), f)
            if lbr:
                lin = u.op("MatMul", h, rh)
                if rbh is not None:
                    lin = u.op("Add", lin, rbh)
                pre = u.op("Add", xh[t], u.op("Mul", rt, lin))
            else:
                pre = u.op("Add", xh[t], u.op("MatMul", u.op("Mul", rt, h), rh))
            ht = u.act(pre, g)
            new = u.op("Add", u.op("Mul", u.op("Sub", u.c(1.0), z), ht), u.op("Mul", z, h))
            rows[t] = nn.emit(t, new)
            h = nn.hold(t, new, h)
        ys.append([v for v in rows if v is not None])  # every step wrote its row
        finals.append(h)
    return nn.outputs(ys, [finals])


@rule("LSTM")
def _lstm(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """it = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Pi (.) Ct-1 + Wbi + Rbi); ft = f(... Pf (.) Ct-1 ...), or 1 - it with
    input_forget; ct = g(Xt*(Wc^T) + Ht-1*(Rc^T) + Wbc + Rbc); Ct = ft (.) Ct-1 + it (.) ct;
    ot = f(Xt*(Wo^T) + Ht-1*(Ro^T) + Po (.) Ct + Wbo + Rbo); Ht = ot (.) h(Ct). W / R / B hold the gates in the
    order i, o, f, c and P in the order i, o, f."""
    s = _setup(r, n, opset)
    if s is None:
        return None
    nn, acts = s
    u = nn.u
    p_in = n.inputs[7] if len(n.inputs) > 7 else None
    if p_in is not None and (p_in.static_shape is None or tuple(p_in.static_shape) != (nn.nd, 3 * nn.hidden)):
        return None
    coupled = bool(int(n.attr("input_forget", 0)))
    hs = nn.hidden
    ys, finals_h, finals_c = [], [], []
    for d in range(nn.nd):
        f, g, hact = acts[3 * d], acts[3 * d + 1], acts[3 * d + 2]
        xi, xo, xf, xc = (nn.projections(d, k) for k in range(4))
        ri, ro, rf, rc = (nn.weight_t(2, d, k) for k in range(4))
        pi = po = pf = None
        if p_in is not None:
            pi, po, pf = (u.slice(p_in, [d, k * hs], [d + 1, (k + 1) * hs], [0, 1]) for k in range(3))
        h, c = nn.state(5, d), nn.state(6, d)
        rows: list[Value | None] = [None] * nn.seq
        for t in nn.order(d):
            pre_i = u.op("Add", xi[t], u.op("MatMul", h, ri))
            if pi is not None:
                pre_i = u.op("Add", pre_i, u.op("Mul", pi, c))
            it = u.act(pre_i, f)
            if coupled:
                ft = u.op("Sub", u.c(1.0), it)
            else:
                pre_f = u.op("Add", xf[t], u.op("MatMul", h, rf))
                if pf is not None:
                    pre_f = u.op("Add", pre_f, u.op("Mul", pf, c))
                ft = u.act(pre_f, f)
            ct = u.act(u.op("Add", xc[t], u.op("MatMul", h, rc)), g)
            c_new = u.op("Add", u.op("Mul", ft, c), u.op("Mul", it, ct))
            pre_o = u.op("Add", xo[t], u.op("MatMul", h, ro))
            if po is not None:
                pre_o = u.op("Add", pre_o, u.op("Mul", po, c_new))
            ot = u.act(pre_o, f)
            unclipped = _Unroll(u.r, u.opset, u.dt, None)  # the cell state goes to h unclipped
            h_new = u.op("Mul", ot, unclipped.act(c_new, hact))
            rows[t] = nn.emit(t, h_new)
            h, c = nn.hold(t, h_new, h), nn.hold(t, c_new, c)
        ys.append([v for v in rows if v is not None])  # every step wrote its row
        finals_h.append(h)
        finals_c.append(c)
    return nn.outputs(ys, [finals_h, finals_c])

"""edgec IR as a PyTorch module: the graph interpreted op by op with torch, quantized weights as fake-quant
parameters on their exact grid, for quantization-aware fine-tuning (the ``qat`` pass) and anything else that
wants gradients through an edgec model.

* Every node runs the op's ONNX (or ``edgec::``) semantics with torch functions (:data:`OPS`); an op or
  attribute variant outside that set raises :class:`~edgec.errors.UnsupportedError` naming it, never an
  approximation.
* A weight held as a grid :class:`~edgec.ir.QuantizedTensor` (``symmetric``, ``asymmetric``, ``affine``)
  becomes a :class:`FakeQuantWeight`: a latent value in code units (initialized at the stored codes) rounded with a
  straight-through estimator, or AdaRound-style learnable rounding between the two grid points around the
  float weight; ``scale`` is learnable (LSQ: the gradient reaches it through ``code * scale``) unless the tensor
  lies on a storage layout's block grid (``layout``, e.g. ``gguf.Q4_K``), whose scales are the format's and stay.
  Codes are clamped to the scheme's range. Before any step the module computes exactly the dequantized weight.
* A ``codebook`` weight trains its palette (the codes stay); ``vector`` weights stay fixed.
* Values with an :class:`~edgec.ir.ActivationQuant` pass through fake quantization (round half to even,
  saturate, as QuantizeLinear/DequantizeLinear) with a straight-through gradient.
* :meth:`IRModule.write_back` puts the trained codes, scales and palettes back into the model as ordinary
  ``QuantizedTensor`` s on the same grid (same scheme, bits, group, layout), so every target carries them.

:meth:`IRModule.run` evaluates any part of the graph: feeds may be any values (a block's input), and only the
nodes the wanted outputs need run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Model, QuantizedTensor, Value

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - torch is an optional dependency
    raise ImportError("edgec.api.torch_ir needs PyTorch: pip install 'edgec[torch]'") from e

ROUNDINGS = ("ste", "adaround")
_ADA_ZETA, _ADA_GAMMA = 1.1, -0.1  # AdaRound's stretched sigmoid


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _expand(p: torch.Tensor, shape: tuple[int, ...], group_axis: int | None, group_size: int | None) -> torch.Tensor:
    """A per-block parameter (same rank as the codes) broadcast to the codes' shape."""
    if group_size and group_axis is not None and p.shape[group_axis] not in (1, shape[group_axis]):
        p = p.repeat_interleave(group_size, dim=group_axis)
    return p.expand(shape)


class FakeQuantWeight(torch.nn.Module):
    """A grid-quantized weight with trainable codes (latent, code units) and scales; ``forward()`` is the
    dequantized weight ``(q - zero_point) * scale + offset`` in float32, ``q`` the rounded, clamped latent."""

    scale0: torch.Tensor
    zero_point: torch.Tensor | None
    offset: torch.Tensor | None
    base: torch.Tensor

    def __init__(
        self,
        q: QuantizedTensor,
        *,
        rounding: str = "ste",
        learn_scales: bool = True,
        float_weight: np.ndarray | None = None,
    ):
        super().__init__()
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
        self.q = q
        self.rounding = rounding
        self.lo, self.hi = q.scheme_type.code_range(q.bits)
        codes = torch.from_numpy(np.asarray(q.codes, np.float32).copy())
        scales = torch.from_numpy(np.asarray(q.scales, np.float32).copy())
        self.learn_scales = learn_scales and not q.layout  # a storage layout's scales are the format's own
        # learnable as a log-factor on the stored scale (Adam's steps are relative; exactly the stored scale at 0)
        self.register_buffer("scale0", scales)
        self.log_scale = torch.nn.Parameter(torch.zeros_like(scales), requires_grad=self.learn_scales)
        zp = None if q.zero_points is None else np.asarray(q.zero_points, np.float32)
        off = None if q.offsets is None else np.asarray(q.offsets, np.float32)
        self.register_buffer("zero_point", None if zp is None else torch.from_numpy(zp.copy()))
        self.register_buffer("offset", None if off is None else torch.from_numpy(off.copy()))
        if rounding == "ste":
            self.latent = torch.nn.Parameter(codes)
        else:
            # AdaRound: code = base + h(V), h in [0, 1], rounded (h >= 0.5) in eval mode. base is the grid point
            # below the float weight (in the stored scale's units) and h starts at the float weight's position
            # between it and the next, on the stored code's side of 0.5, so hard rounding gives the stored codes;
            # a code that is neither neighbour (GPTQ may move one further) starts as base with h near 0.
            base = codes.clone()
            h0 = torch.full_like(codes, 0.05)
            if float_weight is not None:
                u = self._to_codes(torch.from_numpy(np.array(float_weight, np.float32)))
                fl = torch.floor(u)
                frac = (u - fl).clamp(0.05, 0.95)
                up, down = codes == fl + 1, codes == fl
                base = torch.where(up | down, fl, codes)
                # on the stored code's side, as far from 0.5 as the float weight is from its nearest grid point: a
                # code rounded away from the nearest (GPTQ's error compensation) starts as settled as one rounded to
                # it, not at the boundary where the first noisy steps would flip it back to nearest rounding
                far = torch.maximum(frac, 1 - frac).clamp(min=0.55)
                h0 = torch.where(up, far, torch.where(down, 1 - far, h0))
            # integer codes: half of float32's bytes where they fit int16
            self.register_buffer("base", base.to(torch.int16 if q.bits <= 15 else torch.int32))
            p = (h0 - _ADA_GAMMA) / (_ADA_ZETA - _ADA_GAMMA)
            self.v = torch.nn.Parameter(torch.log(p / (1 - p)))

    def _to_codes(self, w: torch.Tensor) -> torch.Tensor:
        """Float weights in code units of the current grid (the inverse of the dequantization, unrounded)."""
        shape = tuple(self.q.codes.shape)
        ga, gs = self.q.group_axis, self.q.group_size
        if self.offset is not None:
            w = w - _expand(self.offset, shape, ga, gs)
        u = w / _expand(self.scale0, shape, ga, gs)
        if self.zero_point is not None:
            u = u + _expand(self.zero_point, shape, ga, gs)
        return u

    def scale(self) -> torch.Tensor:
        return self.scale0 * torch.exp(self.log_scale) if self.learn_scales else self.scale0

    def h(self) -> torch.Tensor:
        """AdaRound's rectified sigmoid of the rounding variables."""
        return torch.clamp(torch.sigmoid(self.v) * (_ADA_ZETA - _ADA_GAMMA) + _ADA_GAMMA, 0, 1)

    def codes(self) -> torch.Tensor:
        """The current integer codes (as float32, with the straight-through gradient where training)."""
        if self.rounding == "ste":
            c = _round_ste(self.latent)
        else:
            h = self.h()
            c = self.base.to(torch.float32) + (h if self.training else (h >= 0.5).to(torch.float32))
        return torch.clamp(c, self.lo, self.hi)

    def rounding_penalty(self, beta: float) -> torch.Tensor:
        """AdaRound's regularizer sum(1 - |2h - 1|^beta), driving every h to 0 or 1 (0 for ``ste``)."""
        if self.rounding != "adaround":
            return torch.zeros(())
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def forward(self) -> torch.Tensor:
        shape = tuple(self.q.codes.shape)
        ga, gs = self.q.group_axis, self.q.group_size
        c = self.codes()
        if self.zero_point is not None:
            c = c - _expand(self.zero_point, shape, ga, gs)
        w = c * _expand(self.scale(), shape, ga, gs)
        if self.offset is not None:
            w = w + _expand(self.offset, shape, ga, gs)
        return w

    def quantized(self) -> QuantizedTensor:
        """The trained weight as a ``QuantizedTensor`` on the same grid (scheme, bits, group, layout). Learned
        scales that were float16 values stay float16 values (targets store them so)."""
        with torch.no_grad():
            was = self.training
            self.eval()
            codes = self.codes().numpy()
            self.train(was)
            scales = self.scale().detach().numpy().astype(np.float32)
        old = np.asarray(self.q.scales, np.float32)
        if self.learn_scales and np.array_equal(old, old.astype(np.float16).astype(np.float32)):
            scales = scales.astype(np.float16).astype(np.float32)
        if self.learn_scales and not np.all(scales > 0):
            scales = np.where(scales > 0, scales, old)  # a scale trained to <= 0 keeps its start
        return dataclasses.replace(self.q, codes=codes.astype(self.q.codes.dtype), scales=scales.astype(old.dtype))


class FakeQuantPalette(torch.nn.Module):
    """A codebook weight: fixed codes, a trainable palette (times the fixed scales where it has them)."""

    idx: torch.Tensor
    s: torch.Tensor | None

    def __init__(self, q: QuantizedTensor) -> None:
        super().__init__()
        self.q = q
        self.palette = torch.nn.Parameter(torch.from_numpy(np.asarray(q.codebook, np.float32).copy()))
        self.register_buffer("idx", torch.from_numpy(np.asarray(q.codes, np.int64)))
        if q.axis is not None or q.group_size:
            raise UnsupportedError(
                "qat: a per-channel or grouped codebook weight is not trainable here; train the per-tensor "
                "palette form (quantize{method=codebook} without group) or leave the layer out (ops=)"
            )
        self.register_buffer("s", None if q.scales is None else torch.from_numpy(np.asarray(q.scales, np.float32)))

    def forward(self) -> torch.Tensor:
        w = self.palette[self.idx]
        return w * self.s if self.s is not None else w

    def quantized(self) -> QuantizedTensor:
        cb = self.palette.detach().numpy()
        return dataclasses.replace(self.q, codebook=cb.astype(np.asarray(self.q.codebook).dtype))


def _fake_quant_act(x: torch.Tensor, aq: Any) -> torch.Tensor:
    """QuantizeLinear then DequantizeLinear with ``aq`` (an ActivationQuant), straight-through gradient."""
    lo = -(1 << (aq.bits - 1)) if aq.signed else 0
    hi = (1 << (aq.bits - 1)) - 1 if aq.signed else (1 << aq.bits) - 1
    scale = torch.tensor(aq.scale, dtype=torch.float32)
    q = torch.clamp(_round_ste(x / scale) + aq.zero_point, lo, hi)
    out: torch.Tensor = (q - aq.zero_point) * scale
    return out


class IRModule(torch.nn.Module):
    """An edgec :class:`~edgec.ir.Model` as a torch module.

    ``quant``: ``"fake"`` (grid weights trainable, see the module doc), ``"frozen"`` (every quantized weight its
    fixed dequantized values). ``float_weights``: weight name -> float array (AdaRound's starting point).
    ``act_quant``: simulate annotated activations' quantization. ``trainable``: the quantized weights made
    trainable (None: every one :func:`trainable_weights` names; more later with :meth:`train_weights`, fewer with
    :meth:`freeze`). ``lazy``: a quantized weight not being trained is dequantized at each use and dropped after it,
    never held as float32 (a language model's weights are hundreds of MB; block-wise training needs one block's)."""

    def __init__(
        self,
        model: Model,
        *,
        quant: str = "fake",
        rounding: str = "ste",
        learn_scales: bool = True,
        float_weights: Mapping[str, np.ndarray] | None = None,
        act_quant: bool = True,
        trainable: Iterable[str] | None = None,
        lazy: bool = False,
    ):
        super().__init__()
        if quant not in ("fake", "frozen"):
            raise ValueError(f"quant must be 'fake' or 'frozen', not {quant!r}")
        self.model = model
        g = model.graph
        self.nodes = list(g)
        unknown = sorted({n.qualified_op for n in self.nodes if _key(n) not in OPS})
        if model.opset < 13:
            unknown += sorted({n.qualified_op for n in self.nodes if n.op_type == "Softmax"})
        if unknown:
            raise UnsupportedError(
                f"the torch interpreter has no kernel for {', '.join(unknown)}; it covers "
                f"{', '.join(sorted(k if d == '' else f'{d}::{k}' for d, k in OPS))}"
            )
        self.act_quant = act_quant
        self.rounding, self.learn_scales = rounding, learn_scales
        self.lazy = lazy
        want = None if trainable is None else set(trainable)
        self.fq = torch.nn.ModuleDict()  # safe key -> FakeQuantWeight / FakeQuantPalette
        self.fq_names: dict[str, str] = {}  # weight name -> key
        self._keys = 0
        self.consts: dict[str, torch.Tensor] = {}
        self.deferred: dict[str, Value] = {}  # lazy: quantized constants dequantized at each use
        grid = set(trainable_weights(model)) if quant == "fake" else set()
        for v in g.initializers.values():
            if v.name in grid and (want is None or v.name in want):
                fw = None if float_weights is None else float_weights.get(v.name)
                self._add(v, fw)
            else:
                self._hold(v)
        self._plans: dict[tuple[frozenset[str], tuple[str, ...]], list[tuple[Any, list[str]]]] = {}

    def _add(self, v: Value, float_weight: np.ndarray | None) -> None:
        c = v.const
        assert isinstance(c, QuantizedTensor)
        mod: torch.nn.Module
        if c.scheme == "codebook":
            mod = FakeQuantPalette(c)
        else:
            mod = FakeQuantWeight(c, rounding=self.rounding, learn_scales=self.learn_scales, float_weight=float_weight)
        key = f"w{self._keys}"
        self._keys += 1
        self.fq[key] = mod
        self.fq_names[v.name] = key
        self.consts.pop(v.name, None)
        self.deferred.pop(v.name, None)

    def _hold(self, v: Value) -> None:
        if self.lazy and isinstance(v.const, QuantizedTensor):
            self.deferred[v.name] = v
        else:
            self.consts[v.name] = _tensor(np.asarray(v.numpy()))

    def train_weights(self, names: Iterable[str], float_weights: Mapping[str, np.ndarray] | None = None) -> None:
        """Make the quantized weights ``names`` trainable (fake-quant modules from their current values in the
        model); ``float_weights`` as the constructor's."""
        g = self.model.graph
        for w in names:
            if w not in self.fq_names:
                self._add(g.value(w), None if float_weights is None else float_weights.get(w))

    def freeze(self, names: Iterable[str]) -> None:
        """Drop the trainable modules of ``names`` (after :meth:`write_back`, or to discard their training):
        the weights are read from the model again, as it holds them now."""
        g = self.model.graph
        for w in list(names):
            key = self.fq_names.pop(w, None)
            if key is not None:
                del self.fq[key]
                self._hold(g.value(w))

    # -- running --------------------------------------------------------------------------------------------
    def forward(self, feeds: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every graph output from the graph inputs (numpy arrays or tensors) by name."""
        return self.run(feeds, [v.name for v in self.model.graph.outputs])

    def _plan(self, have: frozenset[str], outputs: tuple[str, ...]) -> list[tuple[Any, list[str]]]:
        """The nodes computing ``outputs`` from ``have``, in order, each with the values it reads for the last time
        (dropped after it: a whole model's activations are never held at once, outside autograd's own)."""
        key = (have, outputs)
        if key not in self._plans:
            need = set(outputs)
            chosen = []
            for n in reversed(self.nodes):
                if any(o is not None and o.name in need and o.name not in have for o in n.outputs):
                    chosen.append(n)
                    need.update(i.name for i in n.inputs if i is not None and not i.is_const)
            missing = sorted(
                nm
                for nm in need
                if nm not in have
                and not any(o is not None and o.name == nm for n in chosen for o in n.outputs)
                and nm not in self.consts
                and nm not in self.fq_names
                and nm not in self.deferred
            )
            if missing:
                raise ValueError(f"IRModule.run: values {missing} are neither fed nor computed from the feeds")
            nodes = list(reversed(chosen))
            last: dict[str, int] = {}
            for k, n in enumerate(nodes):
                for i in n.inputs:
                    if i is not None and not i.is_const and i.name not in outputs:
                        last[i.name] = k
            drops: list[list[str]] = [[] for _ in nodes]
            for nm, k in last.items():
                drops[k].append(nm)
            for k, n in enumerate(nodes):  # produced and never read (an unused second output)
                drops[k] += [
                    o.name for o in n.outputs if o is not None and o.name not in last and o.name not in outputs
                ]
            self._plans[key] = list(zip(nodes, drops))
        return self._plans[key]

    def weight(self, name: str) -> torch.Tensor:
        """A constant's current value (a fake-quant weight's dequantized grid values)."""
        if name in self.fq_names:
            w: torch.Tensor = self.fq[self.fq_names[name]]()
            return w
        if name in self.deferred:
            return _tensor(np.asarray(self.deferred[name].numpy(), np.float32))
        return self.consts[name]

    def reads(self, feeds: Iterable[str], outputs: Iterable[str]) -> list[str]:
        """The constants the nodes computing ``outputs`` from ``feeds`` read (what :meth:`run` would)."""
        seen: dict[str, None] = {}
        for n, _ in self._plan(frozenset(feeds), tuple(outputs)):
            for i in n.inputs:
                if i is not None and i.is_const:
                    seen.setdefault(i.name, None)
        return list(seen)

    def weights(self, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The fake-quant weights' current values (all, or ``names``), to share across several :meth:`run` calls
        (a batch of windows, an evaluation): each is computed once, with its gradient where enabled."""
        return {w: self.weight(w) for w in (self.fq_names if names is None else names)}

    def run(
        self,
        feeds: Mapping[str, Any],
        outputs: Iterable[str],
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The values ``outputs`` computed from ``feeds`` (any values of the graph, e.g. a block's input),
        running only the nodes they need; ``weights`` (from :meth:`weights`) are used as they are."""
        outs = tuple(outputs)
        env: dict[str, torch.Tensor] = {k: _tensor(a) for k, a in feeds.items()}
        g = self.model.graph
        if self.act_quant:
            for k in list(env):
                if g.value(k).quant is not None and g.value(k) in g.inputs:
                    env[k] = _fake_quant_act(env[k], g.value(k).quant)
        cache: dict[str, torch.Tensor] = dict(weights or {})
        for n, drop in self._plan(frozenset(env), outs):
            args: list[torch.Tensor | None] = []
            for i in n.inputs:
                if i is None:
                    args.append(None)
                elif i.name in env:
                    args.append(env[i.name])
                elif i.name in self.deferred:  # dequantized for this use only: never all at once
                    args.append(self.weight(i.name))
                else:
                    if i.name not in cache:
                        cache[i.name] = self.weight(i.name)
                    args.append(cache[i.name])
            res = OPS[_key(n)](n, args)
            res = res if isinstance(res, (list, tuple)) else [res]
            for o, r in zip(n.outputs, res):
                if o is None:
                    continue
                if self.act_quant and o.quant is not None:
                    r = _fake_quant_act(r, o.quant)
                env[o.name] = r
            for nm in drop:
                env.pop(nm, None)
        return {k: env[k] for k in outs}

    # -- training helpers -------------------------------------------------------------------------------------
    def fake_quant(self) -> dict[str, torch.nn.Module]:
        """Weight name -> its trainable module."""
        return {w: self.fq[k] for w, k in self.fq_names.items()}

    def rounding_penalty(self, beta: float, names: Iterable[str] | None = None) -> torch.Tensor:
        mods = self.fake_quant()
        total = torch.zeros(())
        for w in names if names is not None else mods:
            m = mods[w]
            if isinstance(m, FakeQuantWeight):
                total = total + m.rounding_penalty(beta)
        return total

    def write_back(self, names: Iterable[str] | None = None) -> list[str]:
        """Put the trained weights back into the model as QuantizedTensors (validated); returns their names."""
        mods = self.fake_quant()
        done = []
        for w in names if names is not None else mods:
            q = mods[w].quantized()  # type: ignore[operator]
            errs = q.validate()
            if errs:
                raise ValueError(f"qat: weight {w!r} left its grid: {'; '.join(errs)}")
            v: Value = self.model.graph.value(w)
            v.const = q
            done.append(w)
        return done


def trainable_weights(model: Model) -> list[str]:
    """The model's quantized weights that :class:`IRModule` can train: grid weights (symmetric, asymmetric, affine)
    and per-tensor codebooks."""
    out = []
    for v in model.graph.initializers.values():
        c = v.const
        if isinstance(c, QuantizedTensor) and (
            c.scheme in ("symmetric", "asymmetric", "affine")
            or (c.scheme == "codebook" and c.axis is None and not c.group_size)
        ):
            out.append(v.name)
    return out


def _tensor(a: Any) -> torch.Tensor:
    """A tensor sharing ``a``'s memory (the interpreter never writes to constants or feeds: a read-only array is
    shared too, not copied: a language model's float weights are hundreds of MB)."""
    if isinstance(a, torch.Tensor):
        return a
    arr = np.asarray(a)
    if not arr.flags.writeable:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def _key(n: Any) -> tuple[str, str]:
    return (n.domain or "", n.op_type)


# -- the kernels: ONNX semantics, refusing what they do not cover --------------------------------------------
def _unsupported(n: Any, what: str) -> UnsupportedError:
    return UnsupportedError(f"the torch interpreter cannot run {n.qualified_op} node {n.name!r}: {what}")


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(x) for x in t.reshape(-1).tolist()]


def _linear(n: Any, a: Any) -> Any:
    y = torch.matmul(a[0], a[1].t())
    return y + a[2] if len(a) > 2 and a[2] is not None else y


def _rmsnorm(n: Any, a: Any) -> Any:
    x, s = a
    eps = float(n.attr("epsilon", 1e-5))
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * s


def _gelu(n: Any, a: Any) -> Any:
    approx = n.attr("approximate", "none")
    x = a[0]
    if approx == "tanh":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * (x * x * x))))
    if approx != "none":
        raise _unsupported(n, f"approximate={approx!r}")
    return 0.5 * x * (1 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def _attention(n: Any, a: Any) -> Any:
    q, k, v = a[:3]
    s = torch.matmul(q, k.transpose(-1, -2)) * float(n.attr("scale", 1.0))
    if len(a) > 3 and a[3] is not None:
        s = s + a[3]
    return torch.matmul(torch.softmax(s, -1), v)


def _reshape(n: Any, a: Any) -> Any:
    x, shape = a[0], _ints(a[1])
    if n.attr("allowzero", 0):
        return x.reshape(shape)
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _transpose(n: Any, a: Any) -> Any:
    perm = n.attr("perm")
    return a[0].permute(*perm) if perm is not None else a[0].permute(*reversed(range(a[0].dim())))


def _slice(n: Any, a: Any) -> Any:
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    idx: list[Any] = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise _unsupported(n, f"step {st} (only positive steps)")
        dim = x.shape[ax]
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        idx[ax] = slice(s, e, st)
    return x[tuple(idx)]


def _axes(n: Any, a: Any, pos: int) -> list[int] | None:
    if len(a) > pos and a[pos] is not None:
        return _ints(a[pos])
    ax = n.attr("axes")
    return None if ax is None else [int(x) for x in ax]


def _unsqueeze(n: Any, a: Any) -> Any:
    x = a[0]
    axes = _axes(n, a, 1) or []
    r = x.dim() + len(axes)
    for ax in sorted(ax % r for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(n: Any, a: Any) -> Any:
    axes = _axes(n, a, 1)
    x = a[0]
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _concat(n: Any, a: Any) -> Any:
    return torch.cat([t for t in a if t is not None], dim=int(n.attr("axis")))


def _expand_op(n: Any, a: Any) -> Any:
    shape = _ints(a[1])
    x = a[0]
    r = max(x.dim(), len(shape))
    xs = [1] * (r - x.dim()) + list(x.shape)
    ss = [1] * (r - len(shape)) + shape
    out = [max(p, q) if 1 in (p, q) else p for p, q in zip(xs, ss)]
    return x.reshape(xs).expand(out)


def _gather(n: Any, a: Any) -> Any:
    x, idx = a
    ax = int(n.attr("axis", 0)) % x.dim()
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[ax], idx)
    out = torch.index_select(x, ax, idx.reshape(-1))
    return out.reshape((*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :]))


def _shape(n: Any, a: Any) -> Any:
    s = list(a[0].shape)
    start, end = n.attr("start", 0), n.attr("end")
    return torch.tensor(s[start:end] if end is not None else s[start:], dtype=torch.int64)


def _range(n: Any, a: Any) -> Any:
    start, limit, delta = (t.item() for t in a)
    return torch.arange(start, limit, delta, dtype=a[0].dtype)


def _div(n: Any, a: Any) -> Any:
    x, y = a
    if x.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")


def _softmax(n: Any, a: Any) -> Any:
    return torch.softmax(a[0], int(n.attr("axis", -1)))


def _cast(n: Any, a: Any) -> Any:
    from ..ir import DType

    try:
        to = DType.from_onnx(int(n.attr("to")))
    except ValueError as e:
        raise _unsupported(n, str(e)) from None
    dt = _TORCH_DTYPE.get(np.dtype(to.numpy).name)
    if dt is None:
        raise _unsupported(n, f"a cast to {to}")
    return a[0].to(dt)


_TORCH_DTYPE = {
    "float32": torch.float32,
    "float16": torch.float16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def _reduce(fn: Any) -> Any:
    def k(n: Any, a: Any) -> Any:
        axes = _axes(n, a, 1)
        keep = bool(n.attr("keepdims", 1))
        if not axes:
            if n.attr("noop_with_empty_axes", 0):
                return a[0]
            axes = list(range(a[0].dim()))
        return fn(a[0], axes, keep)

    return k


def _matmul(n: Any, a: Any) -> Any:
    return torch.matmul(a[0], a[1])


def _gemm(n: Any, a: Any) -> Any:
    x, w = a[0], a[1]
    if n.attr("transA", 0):
        x = x.t()
    if n.attr("transB", 0):
        w = w.t()
    y = float(n.attr("alpha", 1.0)) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + float(n.attr("beta", 1.0)) * a[2]
    return y


def _conv(n: Any, a: Any) -> Any:
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise _unsupported(n, "auto_pad (the cleanup makes pads explicit)")
    nd = w.dim() - 2
    if nd not in (1, 2):
        raise _unsupported(n, f"{nd}-D convolution")
    pads = list(n.attr("pads") or [0] * (2 * nd))
    strides = list(n.attr("strides") or [1] * nd)
    dil = list(n.attr("dilations") or [1] * nd)
    group = int(n.attr("group", 1))
    if pads[:nd] != pads[nd:]:
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])])
        pads = [0] * (2 * nd)
    conv = F.conv1d if nd == 1 else F.conv2d
    return conv(x, w, b, stride=strides, padding=pads[:nd], dilation=dil, groups=group)


def _pool(kind: Any) -> Any:
    def k(n: Any, a: Any) -> Any:
        x = a[0]
        ks = list(n.attr("kernel_shape"))
        nd = len(ks)
        if nd != 2 or n.attr("ceil_mode", 0) or n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            raise _unsupported(n, "only 2-D pooling with explicit pads and floor mode")
        pads = list(n.attr("pads") or [0] * 4)
        strides = list(n.attr("strides") or [1, 1])
        if any(d != 1 for d in (n.attr("dilations") or [1, 1])):
            raise _unsupported(n, "dilations")
        if len([o for o in n.outputs if o is not None]) > 1:
            raise _unsupported(n, "the indices output")
        if kind == "max":
            if pads[:2] != pads[2:]:
                x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value=-math.inf)
                pads = [0] * 4
            return F.max_pool2d(x, ks, strides, pads[:2])
        if pads[:2] != pads[2:]:
            raise _unsupported(n, "asymmetric pads")
        return F.avg_pool2d(x, ks, strides, pads[:2], count_include_pad=bool(n.attr("count_include_pad", 0)))

    return k


def _layernorm(n: Any, a: Any) -> Any:
    if any(o is not None and o.uses for o in n.outputs[1:]):
        raise _unsupported(n, "the mean / inverse deviation outputs")
    x, s = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    ax = int(n.attr("axis", -1)) % x.dim()
    eps = float(n.attr("epsilon", 1e-5))
    dims = list(range(ax, x.dim()))
    mean = x.mean(dims, keepdim=True)
    d = x - mean
    y = d / torch.sqrt((d * d).mean(dims, keepdim=True) + eps) * s
    return y + b if b is not None else y


def _clip(n: Any, a: Any) -> Any:
    if n.attr("min") is not None or n.attr("max") is not None:  # opset < 11: bounds as attributes
        return torch.clamp(a[0], n.attr("min"), n.attr("max"))
    x = a[0]
    lo = a[1] if len(a) > 1 and a[1] is not None else None
    hi = a[2] if len(a) > 2 and a[2] is not None else None
    return torch.clamp(x, lo, hi)


def _flatten(n: Any, a: Any) -> Any:
    x = a[0]
    ax = int(n.attr("axis", 1)) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:ax])), -1)


def _where(n: Any, a: Any) -> Any:
    return torch.where(a[0].bool(), a[1], a[2])


def _split(n: Any, a: Any) -> Any:
    x = a[0]
    ax = int(n.attr("axis", 0))
    sizes = _ints(a[1]) if len(a) > 1 and a[1] is not None else n.attr("split")
    if sizes is None:
        k = len(n.outputs)
        if x.shape[ax] % k:
            raise _unsupported(n, "uneven split without sizes")
        sizes = [x.shape[ax] // k] * k
    return list(torch.split(x, list(sizes), dim=ax))


def _pow(n: Any, a: Any) -> Any:
    return torch.pow(a[0], a[1])


def _binary(fn: Any) -> Any:
    return lambda n, a: fn(a[0], a[1])


def _unary(fn: Any) -> Any:
    return lambda n, a: fn(a[0])


OPS: dict[tuple[str, str], Any] = {
    ("edgec", "Linear"): _linear,
    ("edgec", "RMSNorm"): _rmsnorm,
    ("edgec", "Gelu"): _gelu,
    ("edgec", "Attention"): _attention,
    ("", "Reshape"): _reshape,
    ("", "Transpose"): _transpose,
    ("", "Slice"): _slice,
    ("", "Unsqueeze"): _unsqueeze,
    ("", "Squeeze"): _squeeze,
    ("", "Concat"): _concat,
    ("", "Expand"): _expand_op,
    ("", "Gather"): _gather,
    ("", "Shape"): _shape,
    ("", "Range"): _range,
    ("", "Add"): _binary(torch.add),
    ("", "Sub"): _binary(torch.sub),
    ("", "Mul"): _binary(torch.mul),
    ("", "Div"): _div,
    ("", "Pow"): _pow,
    ("", "Less"): _binary(torch.lt),
    ("", "Greater"): _binary(torch.gt),
    ("", "Equal"): _binary(torch.eq),
    ("", "Where"): _where,
    ("", "Neg"): _unary(torch.neg),
    ("", "Sigmoid"): _unary(torch.sigmoid),
    ("", "Tanh"): _unary(torch.tanh),
    ("", "Relu"): _unary(torch.relu),
    ("", "Erf"): _unary(torch.erf),
    ("", "Sqrt"): _unary(torch.sqrt),
    ("", "Exp"): _unary(torch.exp),
    ("", "Log"): _unary(torch.log),
    ("", "Abs"): _unary(torch.abs),
    ("", "Reciprocal"): _unary(torch.reciprocal),
    ("", "Identity"): _unary(lambda x: x),
    ("", "Softmax"): _softmax,
    ("", "MatMul"): _matmul,
    ("", "Gemm"): _gemm,
    ("", "Conv"): _conv,
    ("", "MaxPool"): _pool("max"),
    ("", "AveragePool"): _pool("avg"),
    ("", "GlobalAveragePool"): _unary(lambda x: x.mean(list(range(2, x.dim())), keepdim=True)),
    ("", "Flatten"): _flatten,
    ("", "LayerNormalization"): _layernorm,
    ("", "Clip"): _clip,
    ("", "Split"): _split,
    ("", "ReduceMean"): _reduce(lambda x, ax, k: x.mean(ax, keepdim=k)),
    ("", "ReduceSum"): _reduce(lambda x, ax, k: x.sum(ax, keepdim=k)),
    ("", "ReduceMax"): _reduce(lambda x, ax, k: x.amax(ax, keepdim=k)),
    ("", "Cast"): _cast,
}

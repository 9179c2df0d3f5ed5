"""A line-oriented text form of the IR, printed and parsed losslessly.

Example::

    edgec-ir 1
    opset "" 17
    graph "main" {
      input %x : f32[1,4]
      const %w : f32[2,4] = {"dtype": "f32", "shape": [2, 4], "values": [...]}
      %y : f32[1,2] = edgec::Linear(%x, %w) {} @"fc"
      annotate %y {"act_quant": {"scale": 0.1, ...}}
      output %y
    }

Small tensors print their values (exact float32 round trip), larger ones base64 bytes. Annotations
(activation quantization, sparsity) print on their own ``annotate`` lines. ``elide=True`` replaces large
tensor data by a digest for reading; such text does not parse back.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, cast

import numpy as np

from .core import ConstData, Graph, IRError, Model, Node, Value
from .dtypes import DType
from .tensor import ActivationQuant, QuantizedTensor, Sparsity, Tensor

_PLAIN = re.compile(r"^[A-Za-z0-9_./\-]+$")
INLINE_LIMIT = 32


class ParseError(IRError):
    def __init__(self, lineno: int, line: str, msg: str):
        super().__init__(f"line {lineno}: {msg}\n    {line.strip()}")


# ------------------------------------------------------------------------------------------------ printing
def _name(v: Value | None) -> str:
    if v is None:
        return "_"
    return "%" + (v.name if _PLAIN.match(v.name) else json.dumps(v.name))


def _type(v: Value) -> str:
    dt = v.dtype.short if v.dtype else "?"
    if v.shape is None:
        return dt
    dims = ",".join("?" if d is None else (str(d) if isinstance(d, int) else json.dumps(d)) for d in v.shape)
    return f"{dt}[{dims}]"


Sink = Any  # callable(arr, dtype) -> dict reference, used by serde to move data out of the text
Source = Any  # callable(ref dict) -> np.ndarray, its inverse


def _array(arr: np.ndarray, dtype: DType, elide: bool, sink: Sink = None) -> dict[str, Any]:
    arr = np.asarray(arr)
    if sink is not None:
        return cast("dict[str, Any]", sink(arr, dtype))
    out: dict[str, Any] = {"dtype": dtype.short, "shape": list(arr.shape)}
    if arr.size <= INLINE_LIMIT and dtype != DType.BFLOAT16:
        out["values"] = [x.item() if not isinstance(x, bytes) else x.decode() for x in arr.reshape(-1)]
        if dtype == DType.STRING:
            out["values"] = [str(x) for x in arr.reshape(-1)]
    elif elide:
        out["elided"] = Tensor(arr, dtype).digest()
    else:
        out["b64"] = base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()
    return out


def _const_json(c: Tensor | QuantizedTensor, elide: bool, sink: Sink = None) -> dict[str, Any]:
    if isinstance(c, Tensor):
        return _array(c.numpy(), c.dtype, elide, sink)
    d: dict[str, Any] = {
        "quant": {
            "bits": c.bits,
            "scheme": c.scheme,
            "axis": c.axis,
            "group_size": c.group_size,
            "group_axis": c.group_axis,
            "dtype": c.dtype.short,
            "method": c.method,
        }
    }
    if c.layout:
        d["quant"]["layout"] = c.layout
    if c.vector_dim != 1:
        d["quant"]["vector_dim"] = c.vector_dim
    if c.codebook_bits:
        d["quant"]["codebook_bits"] = c.codebook_bits
    d["codes"] = _array(c.codes, DType.from_numpy(c.codes.dtype), elide, sink)
    for k, p in c.params().items():
        d[k] = _array(p, DType.from_numpy(p.dtype), elide, sink)
    return d


def _attr_json(a: Any) -> Any:
    if isinstance(a, Tensor):
        return {"__tensor__": _array(a.numpy(), a.dtype, elide=False)}
    return a


def print_model(model: Model, elide: bool = False, sink: Sink = None) -> str:
    """Return the text form of ``model``.

    Args:
        model: the model.
        elide: replace large tensors by a digest (readable, but does not parse back).
        sink: if given, called as ``sink(array, dtype)`` for every constant's arrays; its returned dict is
            printed in place of the data (used by :mod:`edgec.ir.serde`).
    """
    lines = ["edgec-ir 1"]
    for dom, ver in sorted(model.opset_imports.items()):
        lines.append(f"opset {json.dumps(dom)} {ver}")
    if model.metadata:
        lines.append("meta " + json.dumps(model.metadata, sort_keys=True))
    if model.reports:  # the passes' reports (they travel with the IR, never into an artifact)
        lines.append("reports " + json.dumps(model.reports, sort_keys=True, default=str))
    g = model.graph
    lines.append(f"graph {json.dumps(g.name)} {{")
    for v in g.inputs:
        lines.append(f"  input {_name(v)} : {_type(v)}")
    for v in g.initializers.values():
        data = json.dumps(_const_json(cast(ConstData, v.const), elide, sink))
        lines.append(f"  const {_name(v)} : {_type(v)} = {data}")
    annotated = [v for v in g.values() if v.quant is not None or v.sparsity is not None]
    for n in g:
        outs = ", ".join(f"{_name(o)} : {_type(o)}" for o in n.outputs)
        ins = ", ".join(_name(v) for v in n.inputs)
        attrs = json.dumps({k: _attr_json(a) for k, a in n.attributes.items()}, sort_keys=True)
        lines.append(f"  {outs} = {n.qualified_op}({ins}) {attrs} @{json.dumps(n.name)}")
    for v in annotated:
        ann: dict[str, Any] = {}
        if v.quant is not None:
            ann["act_quant"] = v.quant.__dict__
        if v.sparsity is not None:
            ann["sparsity"] = v.sparsity.__dict__
        lines.append(f"  annotate {_name(v)} {json.dumps(ann, sort_keys=True)}")
    for v in g.outputs:
        lines.append(f"  output {_name(v)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ parsing
class _Cursor:
    def __init__(self, s: str):
        self.s, self.i = s, 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def peek(self, t: str) -> bool:
        self.ws()
        return self.s.startswith(t, self.i)

    def expect(self, t: str) -> None:
        self.ws()
        if not self.s.startswith(t, self.i):
            raise ValueError(f"expected {t!r} at column {self.i + 1}")
        self.i += len(t)

    def json(self) -> Any:
        self.ws()
        obj, end = json.JSONDecoder().raw_decode(self.s, self.i)
        self.i = end
        return obj

    def word(self, pattern: str = r"[A-Za-z0-9_.:/\-]+") -> str:
        self.ws()
        m = re.compile(pattern).match(self.s, self.i)
        if not m:
            raise ValueError(f"expected a name at column {self.i + 1}")
        self.i = m.end()
        return m.group(0)

    def name(self) -> str | None:
        self.ws()
        if self.peek("_") and not re.match(r"_[A-Za-z0-9]", self.s[self.i :]):
            self.i += 1
            return None
        self.expect("%")
        if self.s.startswith('"', self.i):
            return cast(str, self.json())
        return self.word(r"[A-Za-z0-9_./\-]+")

    def type(self) -> tuple[DType | None, tuple[int | str | None, ...] | None]:
        dt_s = self.word(r"[a-z0-9?]+")
        dt = None if dt_s == "?" else DType.from_short(dt_s)
        if not self.s.startswith("[", self.i):
            return dt, None
        self.i += 1
        dims: list[int | str | None] = []
        while not self.s.startswith("]", self.i):
            if self.s.startswith('"', self.i):
                dims.append(self.json())
            else:
                tok = self.word(r"\?|-?\d+")
                dims.append(None if tok == "?" else int(tok))
            if self.s.startswith(",", self.i):
                self.i += 1
        self.i += 1
        return dt, tuple(dims)

    def done(self) -> bool:
        self.ws()
        return self.i >= len(self.s)


def _from_array(d: dict[str, Any], source: Source = None) -> tuple[np.ndarray, DType]:
    dt = DType.from_short(d["dtype"])
    if "offset" in d:
        if source is None:
            raise ValueError("tensor data lives in a model file's data section; load the file with edgec.ir.load")
        return source(d), dt
    if "elided" in d:
        raise ValueError("tensor data was elided when printing; print without elide to round-trip")
    if "values" in d:
        arr = np.array(d["values"], dtype=dt.numpy).reshape(d["shape"])
    else:
        arr = np.frombuffer(base64.b64decode(d["b64"]), dtype=dt.numpy).reshape(d["shape"])
    return arr, dt


def _const_from(d: dict[str, Any], source: Source = None) -> Tensor | QuantizedTensor:
    if "quant" not in d:
        arr, dt = _from_array(d, source)
        return Tensor(arr, dt)
    q = d["quant"]
    params = {k: _from_array(d[k], source)[0] for k in ("scales", "zero_points", "codebook", "offsets") if k in d}
    lp = {k.split(".", 1)[1]: _from_array(v, source)[0] for k, v in d.items() if k.startswith("layout.")}
    return QuantizedTensor(
        codes=_from_array(d["codes"], source)[0],
        bits=q["bits"],
        scheme=q["scheme"],
        axis=q["axis"],
        group_size=q["group_size"],
        group_axis=q["group_axis"],
        dtype=DType.from_short(q["dtype"]),
        method=q.get("method", "rtn"),
        layout=q.get("layout"),
        layout_params=lp or None,
        vector_dim=q.get("vector_dim", 1),
        codebook_bits=q.get("codebook_bits"),
        **params,
    )


def _attr_from(a: Any) -> Any:
    if isinstance(a, dict) and "__tensor__" in a:
        arr, dt = _from_array(a["__tensor__"])
        return Tensor(arr, dt)
    return a


def parse_model(text: str, source: Source = None) -> Model:
    """Parse the text form back into a :class:`Model` (``source`` resolves data-section references)."""
    lines = text.splitlines()
    opsets: dict[str, int] = {}
    meta: dict[str, str] = {}
    reports: dict[str, Any] = {}
    graph: Graph | None = None
    env: dict[str, Value] = {}
    saw_header = False

    def lookup(name: str | None) -> Value | None:
        if name is None:
            return None
        if name not in env:
            raise ValueError(f"%{name} is used before it is defined")
        return env[name]

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            c = _Cursor(line)
            if not saw_header:
                if line != "edgec-ir 1":
                    raise ValueError("expected the header 'edgec-ir 1'")
                saw_header = True
                continue
            if line.startswith("opset "):
                c.expect("opset")
                dom = c.json()
                opsets[dom] = int(c.word(r"\d+"))
            elif line.startswith("meta "):
                c.expect("meta")
                meta = c.json()
            elif line.startswith("reports "):
                c.expect("reports")
                reports = c.json()
            elif line.startswith("graph "):
                c.expect("graph")
                graph = Graph(c.json())
                c.expect("{")
            elif line == "}":
                c.expect("}")
            elif graph is None:
                raise ValueError("statement outside a graph")
            elif line.startswith("input "):
                c.expect("input")
                name = cast(str, c.name())  # a name, not "_", where a value is defined
                c.expect(":")
                dt, shape = c.type()
                env[name] = graph.add_input(name, cast(DType, dt), shape)
            elif line.startswith("const "):
                c.expect("const")
                name = cast(str, c.name())  # a name, not "_", where a value is defined
                c.expect(":")
                c.type()
                c.expect("=")
                env[name] = graph.add_const(name, _const_from(c.json(), source))
            elif line.startswith("annotate "):
                c.expect("annotate")
                v = cast(Value, lookup(c.name()))  # None ("_") fails on the attribute, as before
                ann = c.json()
                if "act_quant" in ann:
                    v.quant = ActivationQuant(**ann["act_quant"])
                if "sparsity" in ann:
                    v.sparsity = Sparsity(**ann["sparsity"])
            elif line.startswith("output "):
                c.expect("output")
                graph.outputs.append(cast(Value, lookup(c.name())))
            else:
                outs = []
                while True:
                    name = cast(str, c.name())  # a name, not "_", where a value is defined
                    c.expect(":")
                    dt, shape = c.type()
                    outs.append(Value(name, dt, shape))
                    if c.peek(","):
                        c.expect(",")
                        continue
                    break
                c.expect("=")
                op = c.word(r"[A-Za-z0-9_.]+(::[A-Za-z0-9_]+)?")
                domain, op_type = op.split("::") if "::" in op else ("", op)
                c.expect("(")
                ins = []
                while not c.peek(")"):
                    ins.append(lookup(c.name()))
                    if c.peek(","):
                        c.expect(",")
                c.expect(")")
                attrs = {k: _attr_from(a) for k, a in c.json().items()}
                c.expect("@")
                node_name = c.json()
                node = graph.append(Node(op_type, ins, attrs, domain=domain, name=node_name, outputs=outs))
                for o in node.outputs:
                    if o.name in env:
                        raise ValueError(f"%{o.name} is defined twice")
                    env[o.name] = o
            if not c.done():
                raise ValueError(f"unexpected text at column {c.i + 1}")
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ParseError(lineno, raw, str(e)) from None
    if graph is None:
        raise ParseError(len(lines), "", "no graph found")
    model = Model(graph, opsets or {"": 17}, meta)
    model.reports = reports
    return model

"""The graph IR: Model, Graph, Node, Value.

The op vocabulary is ONNX's (``domain``, ``op_type``, attributes, opset) plus a small ``edgec`` domain
for what ONNX lacks (see :mod:`edgec.ir.ops`). Use-def chains are exact by construction:

* every :class:`Value` has at most one producer and an ordered list of uses ``(node, input index)``;
* ``Node.inputs`` is a read-only tuple; it changes only through :meth:`Node.replace_input_with` or
  :meth:`Value.replace_all_uses_with`, which update both sides;
* :meth:`Graph.remove` refuses to remove a node whose outputs are still used (unless told to detach).

Node order is deterministic: nodes stay in insertion order (which frontends make topological) and
iterating a graph walks a snapshot, so passes may mutate while they iterate.

No mutation or lookup depends on the graph's size (only removal checks the graph outputs): nodes form a
doubly linked list (removal and insertion next to a node search no list), use lists become hash-indexed
once they are long (a constant shared by a million nodes), names are indexed, and fresh node names come from
per-base counters instead of probing ``base_0, base_1, ...`` from zero each time. Importing, verifying and
cleaning up a graph are thus linear in its size.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import numpy as np

from .dtypes import DType
from .tensor import ActivationQuant, QuantizedTensor, Sparsity, Tensor

Dim = int | str | None
Shape = tuple[Dim, ...] | None
ConstData = Tensor | QuantizedTensor


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large graph is built or converted (also usable as a
    decorator). Building creates millions of long-lived objects, each batch of which triggers a collection
    that walks every object built so far; the graph holds no garbage to find. Restores the previous state."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class IRError(ValueError):
    """A mutation that would break the IR's invariants."""


class Usage(NamedTuple):
    node: "Node"
    index: int  # type: ignore[assignment]  # shadows tuple.index, as the field has always been named


# A value's uses are a list while short; past this many, an insertion-ordered dict keyed by the Usage
# itself (Node hashes and compares by identity), so recording or dropping one use is O(1) even for a
# constant shared by every node. Both iterate the uses in the order they were recorded.
_USE_INDEX_AT = 8


class Value:
    """An SSA value: a graph input, a constant (initializer) or a node output."""

    __slots__ = (
        "name",
        "dtype",
        "shape",
        "_producer",
        "_index",
        "_uses",
        "const",
        "quant",
        "sparsity",
        "meta",
        "_graph",
    )

    def __init__(self, name: str, dtype: DType | None = None, shape: Shape = None, const: ConstData | None = None):
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape) if shape is not None else None
        self._producer: Node | None = None
        self._index: int | None = None
        self._uses: list[Usage] | dict[Usage, None] = []
        self.const = const
        self.quant: ActivationQuant | None = None
        self.sparsity: Sparsity | None = None
        self.meta: dict[str, Any] = {}  # transient analysis data; never saved
        self._graph: Graph | None = None
        if const is not None:
            self.dtype, self.shape = const.dtype, const.shape

    @property
    def producer(self) -> "Node | None":
        return self._producer

    @property
    def index(self) -> int | None:
        """Output index in the producer."""
        return self._index

    @property
    def uses(self) -> tuple[Usage, ...]:
        return tuple(self._uses)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dim is a known integer, else None."""
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return cast("tuple[int, ...]", tuple(self.shape))  # every dim checked int above

    def numpy(self) -> np.ndarray:
        """Constant data (dequantized for quantized weights)."""
        if self.const is None:
            raise IRError(f"value {self.name!r} is not a constant")
        return self.const.numpy()

    def replace_all_uses_with(self, other: "Value", replace_graph_outputs: bool = True) -> None:
        """Make every user of this value use ``other`` instead."""
        if other is self:
            return
        for node, i in tuple(self._uses):
            node.replace_input_with(i, other)
        if replace_graph_outputs and self._graph is not None:
            g = self._graph
            for i, o in enumerate(g.outputs):
                if o is self:
                    g.outputs[i] = other
                    if other._producer is None and not other.is_const and other not in g.inputs:
                        raise IRError(f"graph output would become the undefined value {other.name!r}")

    def _add_use(self, node: "Node", index: int) -> None:
        uses = self._uses
        if type(uses) is dict:
            uses[Usage(node, index)] = None
            return
        cast("list[Usage]", uses).append(Usage(node, index))
        if len(uses) > _USE_INDEX_AT:
            self._uses = dict.fromkeys(uses)

    def _remove_use(self, node: "Node", index: int) -> None:
        uses = self._uses
        if type(uses) is dict:
            if uses.pop(Usage(node, index), False) is None:
                return
        else:
            for k, u in enumerate(uses):
                if u.node is node and u.index == index:
                    del cast("list[Usage]", uses)[k]
                    return
        raise IRError(f"internal: use ({node.name}, {index}) of {self.name!r} not recorded")

    def _has_use(self, node: "Node", index: int) -> bool:
        """Whether ``(node, index)`` is recorded among the uses (O(1) for long use lists)."""
        uses = self._uses
        if type(uses) is dict:
            return Usage(node, index) in uses
        for u in uses:
            if u.node is node and u.index == index:
                return True
        return False

    def __repr__(self) -> str:
        s = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"%{self.name}: {self.dtype.short if self.dtype else '?'}[{s}]"


class Node:
    """One operator application. ``inputs`` may contain ``None`` for omitted optional inputs."""

    __slots__ = ("op_type", "domain", "name", "attributes", "_inputs", "outputs", "meta", "_graph", "_prev", "_next")

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        attributes: dict[str, Any] | None = None,
        *,
        domain: str = "",
        name: str = "",
        outputs: Sequence[Value] | int = 1,
    ):
        self.op_type = op_type
        self.domain = "" if domain == "ai.onnx" else domain
        self.name = name
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.meta: dict[str, Any] = {}
        self._graph: Graph | None = None
        self._prev: Node | None = None  # neighbours in the graph's node list
        self._next: Node | None = None
        self._inputs: tuple[Value | None, ...] = tuple(inputs)
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._add_use(self, i)
        if isinstance(outputs, int):
            outputs = [Value(f"{name or op_type}_out{k}") for k in range(outputs)]
        self.outputs: tuple[Value, ...] = tuple(outputs)
        for k, o in enumerate(self.outputs):
            if o._producer is not None:
                raise IRError(f"value {o.name!r} already has producer {o._producer.name!r}")
            o._producer, o._index = self, k

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return self._inputs

    def arg(self, index: int) -> Value:
        """Input ``index``, which must be present (not an omitted optional input)."""
        v = self._inputs[index] if -len(self._inputs) <= index < len(self._inputs) else None
        if v is None:
            raise IRError(f"node {self.name!r} ({self.qualified_op}) has no input {index}")
        return v

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise IRError(f"node {self.name!r} ({self.op_type}) has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @property
    def graph(self) -> "Graph | None":
        return self._graph

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    def replace_input_with(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is value:
            return
        if old is not None:
            old._remove_use(self, index)
        if value is not None:
            value._add_use(self, index)
        lst = list(self._inputs)
        lst[index] = value
        self._inputs = tuple(lst)

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        """Replace the whole input list, keeping use lists exact."""
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._remove_use(self, i)
        self._inputs = tuple(values)
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._add_use(self, i)

    def _detach_inputs(self) -> None:
        self.set_inputs([])

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)

    def __repr__(self) -> str:
        return f"Node({self.qualified_op}, name={self.name!r})"


_NAME_OK = re.compile(r"^[A-Za-z0-9_.:/\-]+$")


class Graph:
    """A dataflow graph: inputs, constants, nodes in a deterministic order, outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        # The nodes: a doubly linked list through Node._prev/_next, plus a cached snapshot of the order.
        self._head: Node | None = None
        self._tail: Node | None = None
        self._count = 0
        self._order: tuple[Node, ...] | None = ()
        # Names taken by values / nodes, each mapped to its holder (a hint for value() / node(), which
        # double-check it), and for each base the next suffix free for a fresh node name.
        self._names: dict[str, Value] = {}
        self._node_names: dict[str, Node] = {}
        self._node_suffix: dict[str, int] = {}
        self._insert_at: Node | None = None
        self._counter = itertools.count()

    # ---- naming ---------------------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        base = base or "v"
        if base not in self._names:
            return base
        while True:
            cand = f"{base}_{next(self._counter)}"
            if cand not in self._names:
                return cand

    def _claim(self, v: Value) -> None:
        if v._graph is self:
            return
        if v.name in self._names:
            v.name = self.unique_name(v.name)
        self._names[v.name] = v
        v._graph = self

    def _free_node_name(self, base: str) -> str:
        """``base_k`` for the smallest k >= 0 whose name no node of the graph has.

        ``_node_suffix[base]`` is a k below which every ``base_j`` is taken (lowered when one is released, see
        :meth:`_release_node_name`), so the search does not start from zero every time: naming n unnamed nodes
        of one op type costs O(n), not O(n^2)."""
        names = self._node_names
        k = self._node_suffix.get(base, 0)
        while f"{base}_{k}" in names:
            k += 1
        self._node_suffix[base] = k + 1
        return f"{base}_{k}"

    def _release_node_name(self, name: str) -> None:
        self._node_names.pop(name, None)
        base, sep, k = name.rpartition("_")
        if sep and k.isdigit() and k.isascii() and (k == "0" or k[0] != "0"):
            j = int(k)
            if j < self._node_suffix.get(base, -1):
                self._node_suffix[base] = j

    # ---- building -------------------------------------------------------------------------------------------
    def rename(self, value: Value, new_name: str) -> None:
        """Rename a value of this graph; the new name must be free."""
        if value._graph is not self:
            raise IRError(f"value {value.name!r} is not in graph {self.name!r}")
        if new_name == value.name:
            return
        if new_name in self._names:
            raise IRError(f"cannot rename {value.name!r} to {new_name!r}: the name is taken")
        self._names.pop(value.name, None)
        if value.name in self.initializers:
            self.initializers[new_name] = self.initializers.pop(value.name)
        value.name = new_name
        self._names[new_name] = value

    def add_input(self, name: str, dtype: DType, shape: Shape) -> Value:
        v = Value(name, dtype, shape)
        self._claim(v)
        self.inputs.append(v)
        return v

    def add_const(self, name: str, data: ConstData | np.ndarray) -> Value:
        if isinstance(data, np.ndarray) or np.isscalar(data):
            data = Tensor(np.asarray(data))
        v = Value(name, const=data)
        self._claim(v)
        self.initializers[v.name] = v
        return v

    def append(self, node: Node) -> Node:
        """Add ``node`` at the end, or before the anchor of an active :meth:`inserting_before`."""
        if self._insert_at is not None:
            return self.insert_before(self._insert_at, node)
        self._own(node)
        self._link(node, self._tail, None)
        return node

    def _check_anchor(self, anchor: Node) -> None:
        if anchor._graph is not self:
            raise IRError(f"anchor node {anchor.name!r} is not in graph {self.name!r}")

    def insert_before(self, anchor: Node, node: Node) -> Node:
        self._check_anchor(anchor)
        self._own(node)
        self._link(node, anchor._prev, anchor)
        return node

    def insert_after(self, anchor: Node, node: Node) -> Node:
        self._check_anchor(anchor)
        self._own(node)
        self._link(node, anchor, anchor._next)
        return node

    def _link(self, node: Node, prev: Node | None, nxt: Node | None) -> None:
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        self._count += 1
        self._order = None

    def _unlink(self, node: Node) -> None:
        prev, nxt = node._prev, node._next
        if prev is None:
            self._head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            self._tail = prev
        else:
            nxt._prev = prev
        node._prev = node._next = None
        self._count -= 1
        self._order = None

    @contextlib.contextmanager
    def inserting_before(self, anchor: Node) -> Iterator[None]:
        """Within the block, :meth:`append` and :meth:`op` insert before ``anchor``."""
        prev, self._insert_at = self._insert_at, anchor
        try:
            yield
        finally:
            self._insert_at = prev

    def op(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        attributes: dict[str, Any] | None = None,
        *,
        domain: str = "",
        name: str = "",
        num_outputs: int = 1,
    ) -> Node:
        """Create a node and append it; returns the node (use ``.output`` for its single result)."""
        name = name or f"{op_type}_{next(self._counter)}"
        outs = [Value(f"{name}_out{k}" if num_outputs > 1 else f"{name}_out") for k in range(num_outputs)]
        return self.append(Node(op_type, inputs, attributes, domain=domain, name=name, outputs=outs))

    def _own(self, node: Node) -> None:
        if node._graph is not None:
            raise IRError(f"node {node.name!r} already belongs to a graph")
        node._graph = self
        if not node.name or node.name in self._node_names:
            node.name = self._free_node_name(node.name or node.op_type)
        self._node_names[node.name] = node
        for o in node.outputs:
            self._claim(o)

    # ---- removal --------------------------------------------------------------------------------------------
    def remove(self, node: Node, safe: bool = True) -> None:
        """Remove ``node``. With ``safe`` (the default) refuse when any output is still used."""
        if node._graph is not self:
            raise IRError(f"node {node.name!r} is not in graph {self.name!r}")
        if safe:
            for o in node.outputs:
                if o._uses:
                    users = ", ".join(sorted({u.node.name for u in o._uses}))
                    raise IRError(f"cannot remove node {node.name!r}: its output {o.name!r} is used by {users}")
                if any(x is o for x in self.outputs):
                    raise IRError(f"cannot remove node {node.name!r}: its output {o.name!r} is a graph output")
        node._detach_inputs()
        self._unlink(node)
        self._release_node_name(node.name)
        node._graph = None
        for o in node.outputs:
            self._names.pop(o.name, None)
            o._graph = None

    def remove_const(self, name: str) -> None:
        v = self.initializers[name]
        if v._uses or v in self.outputs:
            raise IRError(f"cannot remove constant {name!r}: it is still used")
        del self.initializers[name]
        self._names.pop(name, None)
        v._graph = None
        if isinstance(v.const, Tensor):
            v.const.release()  # a memory-mapped weight's pages need not stay resident

    # ---- queries --------------------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[Node, ...]:
        """The nodes in order, as a tuple cached until the next insertion or removal."""
        order = self._order
        if order is None:
            out = []
            n = self._head
            while n is not None:
                out.append(n)
                n = n._next
            order = self._order = tuple(out)
        return order

    def __iter__(self) -> Iterator[Node]:
        """Iterate a snapshot of the nodes, so the graph may be mutated meanwhile."""
        return iter(self._snapshot())

    def __len__(self) -> int:
        return self._count

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._snapshot()

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.initializers.values()
        for n in self._snapshot():
            yield from n.outputs

    def _holds(self, v: Value) -> bool:
        """Whether ``v`` is one of :meth:`values`."""
        if v._graph is not self:
            return False
        if v._producer is not None:
            return v._producer._graph is self
        if self.initializers.get(v.name) is v:
            return True
        return any(x is v for x in self.inputs)

    def value(self, name: str) -> Value:
        v = self._names.get(name)
        if v is not None and v.name == name and self._holds(v):
            return v
        for v in self.values():  # renamed behind the graph's back, or not there
            if v.name == name:
                return v
        raise KeyError(f"no value named {name!r} in graph {self.name!r}")

    def node(self, name: str) -> Node:
        n = self._node_names.get(name)
        if n is not None and n.name == name and n._graph is self:
            return n
        for n in self._snapshot():
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph {self.name!r}")

    def sort(self) -> None:
        """Reorder nodes topologically, keeping the current order among independent nodes."""
        nodes = self._snapshot()
        order = {id(n): k for k, n in enumerate(nodes)}
        indeg: dict[int, int] = {}
        users: dict[int, list[Node]] = {id(n): [] for n in nodes}
        for n in nodes:
            deps = {
                id(v._producer)
                for v in n.inputs
                if v is not None and v._producer is not None and v._producer._graph is self
            }
            indeg[id(n)] = len(deps)
            for d in deps:
                users[d].append(n)
        import heapq

        ready = [(order[id(n)], n) for n in nodes if indeg[id(n)] == 0]
        heapq.heapify(ready)
        out: list[Node] = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for u in users[id(n)]:
                indeg[id(u)] -= 1
                if indeg[id(u)] == 0:
                    heapq.heappush(ready, (order[id(u)], u))
        if len(out) != len(nodes):
            stuck = [n.name for n in nodes if indeg[id(n)] > 0][:5]
            raise IRError(f"graph {self.name!r} has a cycle through nodes {stuck}")
        prev = None
        for n in out:
            n._prev = prev
            if prev is not None:
                prev._next = n
            prev = n
        if prev is not None:
            prev._next = None
        self._head, self._tail = (out[0], out[-1]) if out else (None, None)
        self._order = tuple(out)

    def remove_unused_consts(self) -> int:
        outs = {id(o) for o in self.outputs}
        dead = [k for k, v in self.initializers.items() if not v._uses and id(v) not in outs]
        for k in dead:
            self.remove_const(k)
        return len(dead)


class Model:
    """A graph plus the opsets it uses and free-form metadata."""

    def __init__(
        self,
        graph: Graph,
        opset_imports: dict[str, int] | None = None,
        metadata: dict[str, str] | None = None,
        producer: str = "edgec",
    ):
        self.graph = graph
        self.opset_imports = dict(opset_imports or {"": 17})
        self.opset_imports.setdefault("", 17)
        self.metadata: dict[str, str] = dict(metadata or {})
        self.producer = producer
        # Pass reports: the structured record each pass leaves of what it did (per-layer quantization error, pruning,
        # the mixed-precision decision), by report name; the manifest reads them. Not metadata: an artifact never
        # carries them (IR files and text dumps do).
        self.reports: dict[str, dict[str, Any]] = {}

    def report(self, key: str) -> dict[str, Any]:
        """The report ``key`` (created empty), to which a pass adds its entries."""
        return self.reports.setdefault(key, {})

    @property
    def opset(self) -> int:
        return self.opset_imports[""]

    def constants(self) -> Iterable[Value]:
        return self.graph.initializers.values()

    def param_count(self) -> int:
        return sum(int(np.prod(cast("tuple[int, ...]", v.shape), dtype=np.int64)) for v in self.constants())

    def size_bytes(self) -> int:
        return sum(cast(ConstData, v.const).nbytes for v in self.constants())

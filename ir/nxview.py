"""A networkx view of the IR for graph algorithms (the IR itself is not stored in networkx)."""

from __future__ import annotations

import networkx as nx

from .core import Graph


def to_networkx(graph: Graph, with_values: bool = False) -> nx.MultiDiGraph:
    """A directed graph whose nodes are node names (and value names with ``with_values``).

    Without values, an edge ``a -> b`` carries ``value`` (the value's name) and ``index`` (b's input slot).
    """
    g = nx.MultiDiGraph(name=graph.name)
    for n in graph.nodes:
        g.add_node(n.name, kind="node", op=n.qualified_op)
    for n in graph.nodes:
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            if with_values:
                g.add_node(v.name, kind="value")
                g.add_edge(v.name, n.name, index=i)
            elif v.producer is not None:
                g.add_edge(v.producer.name, n.name, value=v.name, index=i)
        if with_values:
            for o in n.outputs:
                g.add_node(o.name, kind="value")
                g.add_edge(n.name, o.name)
    return g

"""The hooks edgec plugins implement. Built-in passes, frontends and targets use exactly these hooks.

A plugin is a module (or object) with functions marked ``@edgec.hookimpl``, listed under the entry-point
group ``edgec`` in its distribution's metadata::

    # pyproject.toml of edgec-acme-npu
    [project.entry-points.edgec]
    acme-npu = "edgec_acme_npu"

    # edgec_acme_npu/__init__.py
    import edgec

    @edgec.hookimpl
    def edgec_register_targets(registry):
        registry.register(AcmeNpuTarget)

Each hook receives a registry and calls ``registry.register(...)``; signatures stay stable as registries
grow. Names must be unique across all plugins: a duplicate is an error naming both distributions.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("edgec")
hookimpl = pluggy.HookimplMarker("edgec")


@hookspec
def edgec_register_passes(registry) -> None:
    """Register pass classes (subclasses of :class:`edgec.ir.passes.Pass`) with ``registry.register(cls)``."""


@hookspec
def edgec_register_frontends(registry) -> None:
    """Register frontends (subclasses of :class:`edgec.frontend.Frontend`) with ``registry.register(cls)``."""


@hookspec
def edgec_register_targets(registry) -> None:
    """Register targets (subclasses of :class:`edgec.target.Target`) with ``registry.register(cls)``."""


@hookspec
def edgec_register_checks(registry) -> None:
    """Register property checks (subclasses of :class:`edgec.checks.Check`) with ``registry.register(cls)``;
    searches such as ``mixed-precision{max_drop=...,checks=...}`` reject candidates that break them."""

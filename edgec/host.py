"""The plugin host: loads built-in and third-party plugins through pluggy and keeps the registries.

Set ``EDGEC_DISABLE_PLUGIN_AUTOLOAD=1`` to load only edgec's built-in plugins (third-party entry points
are then ignored), as with pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import os
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

AUTOLOAD_ENV = "EDGEC_DISABLE_PLUGIN_AUTOLOAD"

# Loaded directly when edgec runs from a source tree without installed metadata.
DEFAULT_PLUGINS = {
    "builtin-frontends": "edgec.plugins.frontends",
    "builtin-cleanup": "edgec.plugins.cleanup",
    "builtin-quantize": "edgec.plugins.quantize",
    "builtin-prune": "edgec.plugins.prune",
    "builtin-mixed": "edgec.plugins.mixed",
    "builtin-qat": "edgec.plugins.qat",
    "builtin-checks": "edgec.plugins.checks",
    "target-cpu": "edgec.targets.cpu",
    "target-gguf": "edgec.targets.gguf",
    "target-openvino": "edgec.targets.openvino",
    "target-tensorrt": "edgec.targets.tensorrt",
    "target-coreml": "edgec.targets.coreml",
    "target-hexagon": "edgec.targets.hexagon",
}


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str


@dataclasses.dataclass(frozen=True)
class Entry:
    obj: Any
    plugin: PluginInfo


class Registry:
    """Name -> registered object, remembering which plugin (and distribution) provided each."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}
        self._current: PluginInfo | None = None

    def register(self, obj: Any) -> None:
        name = getattr(obj, "name", None)
        if not name or not isinstance(name, str):
            raise PluginError(
                f"a {self.kind} registered by plugin {self._current.name if self._current else '?'} "
                f"has no string 'name' attribute: {obj!r}"
            )
        plugin = self._current or PluginInfo("<direct>", getattr(obj, "__module__", "?"), "<none>", "")
        if name in self.entries:
            other = self.entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {other.module} (distribution "
                f"{other.distribution} {other.version}) and by {plugin.module} (distribution "
                f"{plugin.distribution} {plugin.version}); uninstall one of them or rename the {self.kind}"
            )
        self.entries[name] = Entry(obj, plugin)

    def __getitem__(self, name: str) -> Any:
        return self.entries[name].obj

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def as_dict(self) -> dict[str, Any]:
        return {k: e.obj for k, e in self.entries.items()}


class PluginHost:
    """Discovers plugins and fills the pass, frontend and target registries."""

    def __init__(self, autoload: bool | None = None):
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
        self.autoload = autoload
        self.pm = pluggy.PluginManager("edgec")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.passes = Registry("pass")
        self.frontends = Registry("frontend")
        self.targets = Registry("target")
        self.checks = Registry("check")
        self._load()

    def _candidates(self) -> list[tuple[str, str, str, str]]:
        eps = md.entry_points(group="edgec")
        found = []
        for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else "<unknown>"
            ver = ep.dist.version if ep.dist else ""
            if not self.autoload and dist != "edgec":
                continue
            found.append((ep.name, ep.value, dist, ver))
        if not any(d == "edgec" for _, _, d, _ in found):
            from . import __version__

            found = [(n, m, "edgec", __version__) for n, m in DEFAULT_PLUGINS.items()] + found
        return found

    def _load(self) -> None:
        for name, module, dist, ver in self._candidates():
            try:
                mod = importlib.import_module(module.split(":")[0])
            except Exception as e:  # noqa: BLE001 - a broken plugin must not take edgec down silently
                raise PluginError(
                    f"plugin {name!r} from distribution {dist} {ver} failed to import "
                    f"{module!r}: {type(e).__name__}: {e}"
                ) from e
            info = PluginInfo(name, module, dist, ver)
            if self.pm.is_registered(mod):
                continue
            self.pm.register(mod, name=f"{dist}:{name}")
            self.plugins.append(info)
            for reg, hook_name in (
                (self.passes, "edgec_register_passes"),
                (self.frontends, "edgec_register_frontends"),
                (self.targets, "edgec_register_targets"),
                (self.checks, "edgec_register_checks"),
            ):
                reg._current = info
                try:
                    _call_one(self.pm, mod, hook_name, reg)
                finally:
                    reg._current = None


def _call_one(pm: pluggy.PluginManager, mod: Any, hook_name: str, registry: Registry) -> None:
    """Call one plugin's implementation of a hook, so registrations are attributed to that plugin."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin is mod:
            impl.function(registry=registry)


_HOST: PluginHost | None = None


def host(reload: bool = False) -> PluginHost:
    """The process-wide plugin host (created on first use)."""
    global _HOST
    if _HOST is None or reload:
        _HOST = PluginHost()
    return _HOST

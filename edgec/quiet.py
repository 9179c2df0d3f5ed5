"""Keep the libraries edgec drives from writing outside the output and cache directories.

edgec writes its output directory and its compile cache, nothing else. Three libraries it imports write user
files (and two report usage) on their own, already at import:

* **onnxruntime** (1.2x on Linux too) starts Microsoft's OneDS telemetry when imported: it creates
  ``$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}`` (``~/.cache`` without
  ``XDG_CACHE_HOME``) and ``$TMPDIR/.ses``. ``onnxruntime.disable_telemetry_events()`` comes too late (the files
  already exist); the environment variable ``ORT_DISABLE_TELEMETRY=1``, read when the library loads, stops all
  three.
* **OpenVINO**: ``import openvino`` imports the model converter (``openvino.tools.ovc``), which starts the
  ``openvino-telemetry`` package: it writes ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` and sends a
  Google Analytics event. There is no environment switch (its opt-out script writes a file under ``~/intel``
  too); OpenVINO falls back to its own no-op stub when ``openvino_telemetry`` cannot be imported, which a
  ``None`` entry in ``sys.modules`` arranges.
* **matplotlib** (the report's plots) creates ``~/.config/matplotlib`` and caches its font list in
  ``~/.cache/matplotlib``. ``MPLCONFIGDIR`` names one directory for both: edgec points it at a private temporary
  directory removed at exit. That also keeps a user's ``matplotlibrc`` from changing ``report.html``.

:func:`quiet_libraries` applies all three before any of these libraries is imported (a library already imported
keeps what it did). An explicit setting wins: ``ORT_DISABLE_TELEMETRY`` or ``MPLCONFIGDIR`` already in the
environment is left alone. It imports nothing from edgec, so every layer (targets, plugins) may call it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

_done = False


def quiet_libraries() -> None:
    """Turn off onnxruntime's and OpenVINO's telemetry and move matplotlib's config/cache directory to a private
    temporary one, for this process and its children. Idempotent and cheap; call it before importing them."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # OpenVINO uses its telemetry_stub
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        d = tempfile.mkdtemp(prefix="edgec-matplotlib-")
        atexit.register(_remove, d, os.getpid())
        os.environ["MPLCONFIGDIR"] = d


def _remove(d: str, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that runs atexit: the directory is the parent's
        shutil.rmtree(d, ignore_errors=True)

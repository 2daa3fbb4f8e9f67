"""A local server speaking Segmind's protocol for ``fast-flux-schnell`` (synthetic images).

with run_emulator(EmulatorSettings(workers=4, step_time=0.3)) as emu:
    emu.url      # "http://127.0.0.1:PORT": SEGMIND_BASE_URL for the engine or the SDK
    emu.stats()  # GET /_emulator/stats

The names below load on first use, so the CLI reads :mod:`~flux_pipeline.emulator.settings`
(its flags) without importing the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flux_pipeline.emulator.app import create_app
    from flux_pipeline.emulator.render import render_image
    from flux_pipeline.emulator.server import RunningEmulator, run_emulator, serve
    from flux_pipeline.emulator.settings import EmulatorSettings

#: Each public name and the module that defines it.
_MODULES = {
    "EmulatorSettings": "settings",
    "RunningEmulator": "server",
    "create_app": "app",
    "render_image": "render",
    "run_emulator": "server",
    "serve": "server",
}

__all__ = [
    "EmulatorSettings",
    "RunningEmulator",
    "create_app",
    "render_image",
    "run_emulator",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)

"""A local server speaking Segmind's protocol for ``fast-flux-schnell`` (synthetic images)."""

from flux_pipeline.emulator.app import create_app
from flux_pipeline.emulator.render import render_image
from flux_pipeline.emulator.server import RunningEmulator, run_emulator, serve
from flux_pipeline.emulator.settings import EmulatorSettings

__all__ = [
    "EmulatorSettings",
    "RunningEmulator",
    "create_app",
    "render_image",
    "run_emulator",
    "serve",
]

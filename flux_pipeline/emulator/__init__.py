"""A local server speaking Segmind's protocol for ``fast-flux-schnell`` (synthetic images).

with run_emulator(EmulatorSettings(workers=4, step_time=0.3)) as emu:
    emu.url      # "http://127.0.0.1:PORT": SEGMIND_BASE_URL for the engine or the SDK
    emu.stats()  # GET /_emulator/stats
"""

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

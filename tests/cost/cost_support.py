"""What the cost suite shares: its prompt table, its days, and ``flux-pipeline plan`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

COMMAND = Path(sys.executable).with_name("flux-pipeline")
DAYS = ("2026-11-20", "2026-11-21")
#: Four prompts: ``whale`` pins its seed (the same request key every day); ``blocked`` ends in a
#: final FAILED on the emulator (its safety filter).
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,a red fox in snow,,1,1:1
whale,a humpback whale breaching,11,1,16:9
tower,a spiral library tower,,1,9:21
blocked,something nsfw,,1,1:1
"""


def plan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``flux-pipeline plan ARGS`` in a subprocess; ``env`` is added (FLUX_PROMPTS removed)."""
    environment = {k: v for k, v in os.environ.items() if k != "FLUX_PROMPTS"}
    return subprocess.run(
        [str(COMMAND), "plan", *args],
        capture_output=True,
        text=True,
        env={**environment, **env},
        timeout=120,
        check=False,
    )


def plan_json(*args: str, **env: str) -> dict[str, Any]:
    """``flux-pipeline plan ARGS --json``, which must succeed, parsed."""
    run = plan(*args, "--json", **env)
    assert run.returncode == 0, run.stderr
    body: dict[str, Any] = json.loads(run.stdout)
    return body

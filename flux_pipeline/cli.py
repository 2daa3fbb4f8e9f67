"""The ``flux-pipeline`` console command."""

def main() -> None:
    raise SystemExit("not yet")

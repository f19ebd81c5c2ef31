"""``python -m bodypart_router`` runs the command-line interface."""

from .cli import main

if __name__ == "__main__":  # not when a spawned worker process re-imports this module
    raise SystemExit(main())

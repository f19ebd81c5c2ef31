"""``python -m bodypart_router`` runs the command-line interface."""

from .cli import main

raise SystemExit(main())

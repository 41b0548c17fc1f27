"""``python -m prosper`` runs the command-line interface."""

from prosper.cli import main

raise SystemExit(main())

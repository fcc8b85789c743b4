"""Old import path of :mod:`sam3agent.app.cli` (the ``sam3agent`` command), kept so that scripts and
entry points naming ``sam3agent.cli:main`` keep working."""

from sam3agent.app.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())

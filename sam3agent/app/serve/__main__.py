"""``python -m sam3agent.serve mcp|http ...``: the same as ``sam3agent serve ...``."""

from sam3agent.app.serve.cli import main

raise SystemExit(main())

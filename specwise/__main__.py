"""``python -m specwise`` runs the CLI."""

from __future__ import annotations

from specwise.cli import run

if __name__ == "__main__":
    run()

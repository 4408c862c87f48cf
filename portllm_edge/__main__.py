"""``python -m portllm_edge`` runs the CLI."""

from portllm_edge.cli import run

run()

"""portllm-edge's Textual app, installed as ``portllm_edge_tui``.

It calls the headless core's public API only.
"""

"""The five top-level screens, one per mode (keys 1-5).

Each lives in its own module, imported when the screen is first opened (see
``portllm_edge_tui.app._make_screen``), so start-up imports only the Dashboard.
"""

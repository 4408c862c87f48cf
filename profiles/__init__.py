"""Data only: model lineages (``models/*.toml``) and hardware profiles (``hardware/*.toml``).

Installed as the package ``portllm_edge_profiles`` so that a non-editable
install finds the files through ``importlib.resources``.
"""

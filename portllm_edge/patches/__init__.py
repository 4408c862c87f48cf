"""portllm_edge.patches"""

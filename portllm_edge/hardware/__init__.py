"""portllm_edge.hardware"""

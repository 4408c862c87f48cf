"""portllm_edge.history"""

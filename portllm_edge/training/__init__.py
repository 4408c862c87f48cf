"""portllm_edge.training"""

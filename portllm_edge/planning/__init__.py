"""portllm_edge.planning"""

"""portllm_edge.catalog"""

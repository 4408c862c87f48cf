"""portllm_edge.measure"""

"""portllm_edge.evaluation"""

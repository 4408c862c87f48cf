"""portllm_edge.models"""

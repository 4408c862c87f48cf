"""portllm_edge.reports"""

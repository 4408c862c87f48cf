"""portllm_edge.porting"""

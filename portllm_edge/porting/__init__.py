"""portllm_edge.porting: load a base at a precision, check a patch against it, attach or merge it."""

"""portllm_edge.training: LoRA/QLoRA fine-tuning (the initial patch and the baseline) and
full-parameter continued pretraining (a simulated base-model update, as in PortLLM §4)."""

"""Model machinery every stage shares: build and load models (tiny, hub, GGUF, LoRA), batches, response log-probs,
batched generation, and DRO's value model."""

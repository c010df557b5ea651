"""Chat backends: the models the gateway sits in front of (local transformers, OpenAI-compatible, echo)."""

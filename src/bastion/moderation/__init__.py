"""Content moderation: OpenAI-compatible `/v1/moderations`, backends, policy, training and evaluation."""

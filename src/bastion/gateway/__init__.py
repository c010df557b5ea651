"""The safety gateway: OpenAI-compatible chat completions with moderated input and output."""

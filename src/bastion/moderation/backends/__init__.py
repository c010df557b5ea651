"""Moderation backends: plugins that turn texts into per-category probabilities."""

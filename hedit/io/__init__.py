"""Checkpoint I/O, kept apart from the math: safetensors headers, source folders, atomic output."""

"""Checking: the runtime intervention on a loaded model, and verification of artifacts against it."""

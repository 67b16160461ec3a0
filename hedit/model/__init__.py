"""Models: loading with transformers, built-in models, tiny random models for tests."""

"""Checking: verify an artifact against the runtime intervention, in transformers, vLLM, or by its bytes
(``structure``); ``verify`` dispatches, ``common`` holds what the runtimes share."""

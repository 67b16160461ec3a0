"""Shipping: `hedit push` to the Hugging Face Hub."""

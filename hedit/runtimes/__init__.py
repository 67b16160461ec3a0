"""Checks of hedit's artifacts in other inference stacks."""

"""Measuring what alpha does: generation, judges, behaviour suites, capability, the sweep and tune."""

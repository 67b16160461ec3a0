"""Measuring what alpha does: sweeps of alpha against behaviour suites and capability, with random-neuron
controls, their summaries and plots."""

"""Measurements: size, FLOPs, latency, peak memory and accuracy, each defined in one place."""

"""bench: measure a model on this hardware (throughput, latency, utilisation, accuracy, cost).

The result types, statistics, catalogue and cost arithmetic are torch-free; only the
runner loads models, through the backends (torch imported lazily).
"""

"""Discrete-event models of inferpack servers and fleets: predicted latency at any scale.

``service``: batch service-time curves and batching policies; ``server``: one server's
frontend, batchers and workers, event by event.
"""

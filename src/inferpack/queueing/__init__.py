"""Discrete-event models of one inferpack server (frontend, per-model batchers, worker
threads): the latency model the planner checks its servers with and ``simulate`` scales
to fleets. Pure numpy and Python; no server, no clock."""

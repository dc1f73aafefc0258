"""A planned fleet, simulated event by event: predicted latency at any scale.

``fleet``: router, routing by planned share, each server through
:mod:`inferpack.queueing.server`; ``demand``: rates from the plan, a demand CSV or a trace;
``result``: the JSON document.
"""

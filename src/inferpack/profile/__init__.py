"""profile: the highest open-loop rate one server sustains for a model kind at a p90 SLO."""

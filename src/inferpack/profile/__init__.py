"""profile: the highest open-loop rate one server sustains for a model kind at a p90 SLO.

search (the pure rate search) · copies (N distinct-weight copies of a model) · serving (the
server under measurement, in this process) · run (copies → server → search → Profile) ·
output (profiles.yaml updated in place). docs/profile.md has the method.
"""

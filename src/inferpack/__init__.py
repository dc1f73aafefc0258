"""inferpack: serve deep-learning models fast and cheaply, and measure what serving costs.

Importing the package is light: no torch, no device probes, no I/O. Engines load lazily.
"""

__version__ = "0.1.0"

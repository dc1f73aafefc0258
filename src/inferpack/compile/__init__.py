"""compile: a model → an optimised artifact for a target, with its accuracy against fp32 eager."""

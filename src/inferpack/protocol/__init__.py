"""Protocol adapters: wire format <-> InferRequest / InferResponse, and nothing else."""

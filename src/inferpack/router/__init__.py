"""router: one KServe v2 address (REST and gRPC) in front of a fleet, forwarding by model name."""

"""deploy: a plan → Kubernetes manifests, or a local fleet of servers behind a router.

One ``ServerSpec`` per planned server feeds both targets: the argv a Deployment runs is the
argv the local target starts.
"""

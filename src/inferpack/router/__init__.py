"""One KServe v2 address (REST and gRPC) in front of a fleet: requests go by model name to
a replica hosting the model, least outstanding first. See docs/deploy-local.md."""

from inferpack.router.server import RouterConfig, RunningRouter, start_router
from inferpack.router.table import Backend, Picker, RoutingTable

__all__ = ["Backend", "Picker", "RouterConfig", "RoutingTable", "RunningRouter", "start_router"]

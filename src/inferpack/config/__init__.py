"""Model and server configuration: small value objects, validated in one place."""

from inferpack.config.model_config import (
    DynamicBatchingConfig,
    InstanceConfig,
    ModelConfig,
    parse_model_config,
)
from inferpack.config.server_config import ServerConfig
from inferpack.config.tensor_spec import TensorSpec

__all__ = [
    "DynamicBatchingConfig",
    "InstanceConfig",
    "ModelConfig",
    "ServerConfig",
    "TensorSpec",
    "parse_model_config",
]

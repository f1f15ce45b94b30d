"""A run's configuration: the schema (:mod:`.schema`), reading and checking it (:mod:`.parse`),
and the generated reference (:mod:`.reference`, ``python -m mpiml.config``)."""

from .parse import (
    ConfigError,
    data_recipe,
    dump,
    from_dict,
    load,
    parse_override,
    resume_conflicts,
)
from .schema import (
    RESUME_LOCKED,
    CheckpointConfig,
    CommConfig,
    Config,
    DataConfig,
    FaultConfig,
    HGBTConfig,
    KMeansConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    TrainConfig,
)

__all__ = [
    "RESUME_LOCKED", "CheckpointConfig", "CommConfig", "Config", "ConfigError", "DataConfig",
    "FaultConfig", "HGBTConfig", "KMeansConfig", "ModelConfig", "OptimizerConfig",
    "OutputConfig", "TrainConfig", "data_recipe", "dump", "from_dict", "load", "parse_override",
    "resume_conflicts",
]

"""After the choice: NIR export and read-back, 8- and 4-bit weight files, operation counts and energy, and
whether the model deploys on each target (snntorch, spikingjelly, norse, Speck)."""

from engine.deploy.counts import (
    OpCounts,
    count_ops,
    measure,
)
from engine.deploy.exports import (
    EXPORT_FORMATS,
    check_file,
    export,
    measure_quantized,
    write_quantized,
)
from engine.deploy.nir import (
    DT,
    NIR_FORMAT,
    DeployError,
    NirCheck,
    NIRLeaky,
    SnnTorchNet,
    check_nir,
    lif_names,
    nir_metadata,
    read_nir,
    to_nir,
    to_snntorch,
    write_nir,
)
from engine.deploy.targets import (
    SPECK_SOURCE,
    Rule,
    TargetReport,
    deploy_report,
)

__all__ = [
    "check_file",
    "check_nir",
    "count_ops",
    "deploy_report",
    "DeployError",
    "DT",
    "export",
    "EXPORT_FORMATS",
    "lif_names",
    "measure",
    "measure_quantized",
    "NIR_FORMAT",
    "nir_metadata",
    "NirCheck",
    "NIRLeaky",
    "OpCounts",
    "read_nir",
    "Rule",
    "SnnTorchNet",
    "SPECK_SOURCE",
    "TargetReport",
    "to_nir",
    "to_snntorch",
    "write_nir",
    "write_quantized",
]

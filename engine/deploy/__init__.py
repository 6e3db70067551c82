"""After the choice: NIR export and read-back, 8- and 4-bit weight files, operation counts and energy."""

from engine.deploy.nir import (
    check_nir,
    DeployError,
    DT,
    lif_names,
    NIR_FORMAT,
    nir_metadata,
    NirCheck,
    NIRLeaky,
    read_nir,
    SnnTorchNet,
    to_nir,
    to_snntorch,
    write_nir,
)
from engine.deploy.counts import (
    count_ops,
    measure,
    OpCounts,
)
from engine.deploy.exports import (
    check_file,
    export,
    EXPORT_FORMATS,
    measure_quantized,
    write_quantized,
)

__all__ = [
    "check_file",
    "check_nir",
    "count_ops",
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
    "SnnTorchNet",
    "to_nir",
    "to_snntorch",
    "write_nir",
    "write_quantized",
]

"""Files: HDF5 results (write, checkpoint, load), data sources and TOML job configs."""

from prosper.io.config import JobConfig, dump_toml, read_config
from prosper.io.results import ResultWriter, load, read_checkpoint
from prosper.io.sources import read_rows

__all__ = [
    "JobConfig",
    "ResultWriter",
    "dump_toml",
    "load",
    "read_checkpoint",
    "read_config",
    "read_rows",
]

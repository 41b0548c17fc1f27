"""Files: HDF5 results (write, checkpoint, load), data sources and TOML job configs."""

from prosper.io.config import JobConfig, dump_toml, read_config
from prosper.io.results import ResultWriter, load, read_checkpoint
from prosper.io.sources import DataSource, as_source, open_source, read_rows

__all__ = [
    "DataSource",
    "JobConfig",
    "ResultWriter",
    "as_source",
    "dump_toml",
    "load",
    "open_source",
    "read_checkpoint",
    "read_config",
    "read_rows",
]

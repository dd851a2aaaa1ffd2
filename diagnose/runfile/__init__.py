"""The run file: its schema (the public contract) and the writer the probes use."""

from diagnose.runfile.schema import SCHEMA, SCHEMA_VERSION
from diagnose.runfile.writer import RunWriter

__all__ = ["SCHEMA", "SCHEMA_VERSION", "RunWriter"]

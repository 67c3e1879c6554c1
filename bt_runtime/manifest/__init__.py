"""`manifest.json`, the one typed contract between the exporter and everything that reads an export: its schema
(dataclasses), the codec that reads and writes them as JSON, and loading with every check. Readers use the typed
objects, never raw dicts."""

from .load import (SCHEMA_FILE, check_files, checked, check_meaning, dump, from_dict, json_schema, read_manifest,
                   write_manifest)
from .schema import (ALPHA_RULES, AlphaRule, AxisLink, Broadcast, CenterCrop, Checkpoint, CheckpointKind, ConfigSummary,
                     EngineFile, FileRef, GRAPH_NAMES, Golden, GoldenTensor, GraphFile, GraphIO, HEAD_NAMES, Head, MANIFEST_NAME,
                     Manifest, OPTIONAL_GRAPH_NAMES, Parity, Preprocessing, RESAMPLE_NAMES, Reference, RejectedVariant, Resample,
                     Resize, SCHEMA_VERSION, Substitute, TENSOR_DTYPES, TensorDtype, TensorInfo, TensorRTEngines, TokenizerInfo,
                     TrtPrecision, Variant, Wire, Wiring)

__all__ = ["SCHEMA_FILE", "check_files", "checked", "check_meaning", "dump", "from_dict", "json_schema", "read_manifest",
           "write_manifest",
           "ALPHA_RULES", "AlphaRule", "AxisLink", "Broadcast", "CenterCrop", "Checkpoint", "CheckpointKind",
           "ConfigSummary", "EngineFile", "FileRef", "GRAPH_NAMES", "Golden", "GoldenTensor", "GraphFile", "GraphIO",
           "HEAD_NAMES", "Head", "MANIFEST_NAME", "Manifest", "OPTIONAL_GRAPH_NAMES", "Parity", "Preprocessing",
           "RESAMPLE_NAMES", "Reference", "RejectedVariant", "Resample", "Resize", "SCHEMA_VERSION", "Substitute",
           "TENSOR_DTYPES", "TensorDtype", "TensorInfo", "TensorRTEngines", "TokenizerInfo", "TrtPrecision", "Variant",
           "Wire", "Wiring"]

"""havip: a high-availability supervisor for Milvus, wire-compatible with keepalived."""

__version__ = "0.1.0"

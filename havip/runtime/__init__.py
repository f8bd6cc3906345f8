"""The local Milvus container: start, stop, confirm."""

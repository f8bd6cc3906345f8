"""Milvus health checks: Docker API and gRPC CheckHealth."""

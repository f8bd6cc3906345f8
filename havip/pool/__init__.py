"""The read pool: nginx as the data plane, havip as its brain.

Milvus reads (Search, HybridSearch, Query) are spread over the read nodes that pass
their active gRPC checks; everything else goes to the writer. See docs/read-pool.md.
The daemon imports neither pymilvus nor pandas nor numpy (tests assert it).
"""

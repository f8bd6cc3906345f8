"""The namespace lab: hosts, bridge, dockerd per host, keepalived, Milvus image."""

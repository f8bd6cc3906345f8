"""The routing table comes from Milvus' proto (as pymilvus ships it); tests may import pymilvus."""

from __future__ import annotations

from havip.pool import methods


def _proto_methods():
    from pymilvus.grpc_gen import milvus_pb2

    return milvus_pb2.DESCRIPTOR.services_by_name["MilvusService"].methods


def test_method_list_is_the_proto_s():
    assert methods.ALL == tuple(m.name for m in _proto_methods())
    assert methods.SERVICE == _proto_methods()[0].containing_service.full_name


def test_default_reads_are_the_data_plane_queries():
    by_name = {m.name: m for m in _proto_methods()}
    assert methods.DEFAULT_READS == ("Search", "HybridSearch", "Query")
    assert by_name["Search"].output_type.name == by_name["HybridSearch"].output_type.name == "SearchResults"
    assert by_name["Query"].output_type.name == "QueryResults"


def test_nothing_that_writes_may_be_routed_to_a_read_node():
    writes = {"Insert", "Delete", "Upsert", "Flush", "FlushAll", "CreateCollection", "DropCollection",
              "LoadCollection", "ReleaseCollection", "CreateIndex", "DropIndex", "Import", "AlterCollection",
              "CreatePartition", "ManualCompaction", "AllocTimestamp", "TruncateCollection", "Connect"}
    assert writes <= set(methods.ALL)
    assert not writes & methods.MAY_READ
    # Streaming calls are not unary reads either.
    streaming = {m.name for m in _proto_methods() if m.server_streaming or m.client_streaming}
    assert streaming and not streaming & methods.MAY_READ


def test_paths_are_what_nginx_matches():
    assert methods.path("Search") == "/milvus.proto.milvus.MilvusService/Search"

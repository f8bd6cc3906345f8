"""Milvus' gRPC methods, and which of them the pool may serve from a read node.

`ALL` is every method of `milvus.proto.milvus.MilvusService` as pymilvus 3.0.2 ships the
proto (grpc_gen/milvus_pb2.py), in proto order; tests/unit/test_pool_methods.py reads
the proto and fails when they differ, so a new pymilvus cannot add a method silently.
The list is copied here because the pool daemon must not import pymilvus.

`DEFAULT_READS` are the data-plane reads that run on loaded segments: what a pool of
read nodes exists for. pymilvus' `get()` is a Query. `MAY_READ` are the methods that
change nothing and may be added with `read_methods:`; everything else (Insert, Delete,
Upsert, Flush, CreateIndex, LoadCollection, ...) changes state and always goes to the
writer.
"""

from __future__ import annotations

SERVICE = "milvus.proto.milvus.MilvusService"

ALL: tuple[str, ...] = (
    "CreateCollection", "DropCollection", "HasCollection", "LoadCollection", "ReleaseCollection",
    "DescribeCollection", "BatchDescribeCollection", "GetCollectionStatistics", "ShowCollections",
    "AlterCollection", "AlterCollectionField", "AddCollectionFunction", "AlterCollectionFunction",
    "DropCollectionFunction", "TruncateCollection", "CreatePartition", "DropPartition", "HasPartition",
    "LoadPartitions", "Prewarm", "DescribePrewarmTask", "ReleasePartitions", "GetPartitionStatistics",
    "ShowPartitions", "CreateNamespace", "DescribeNamespace", "ListNamespaces", "DropNamespace",
    "HasNamespace", "GetNamespaceStats", "GetLoadingProgress", "GetLoadState", "CreateAlias", "DropAlias",
    "AlterAlias", "DescribeAlias", "ListAliases", "CreateIndex", "AlterIndex", "DescribeIndex",
    "GetIndexStatistics", "GetIndexState", "GetIndexBuildProgress", "DropIndex", "Insert", "Delete",
    "Upsert", "Search", "HybridSearch", "Flush", "Query", "CalcDistance", "FlushAll", "AddCollectionField",
    "AddCollectionStructField", "GetFlushState", "GetFlushAllState", "GetPersistentSegmentInfo",
    "GetQuerySegmentInfo", "GetReplicas", "Dummy", "RegisterLink", "GetMetrics", "GetComponentStates",
    "LoadBalance", "GetCompactionState", "ManualCompaction", "GetCompactionStateWithPlans", "Import",
    "GetImportState", "ListImportTasks", "CreateCredential", "UpdateCredential", "DeleteCredential",
    "ListCredUsers", "CreateRole", "AlterRole", "DropRole", "OperateUserRole", "SelectRole", "SelectUser",
    "OperatePrivilege", "OperatePrivilegeV2", "SelectGrant", "GetVersion", "CheckHealth",
    "CreateResourceGroup", "DropResourceGroup", "UpdateResourceGroups", "TransferNode", "TransferReplica",
    "ListResourceGroups", "DescribeResourceGroup", "RenameCollection", "ListIndexedSegment",
    "DescribeSegmentIndexData", "Connect", "AllocTimestamp", "CreateDatabase", "DropDatabase",
    "ListDatabases", "AlterDatabase", "DescribeDatabase", "ReplicateMessage", "BackupRBAC", "RestoreRBAC",
    "CreatePrivilegeGroup", "DropPrivilegeGroup", "ListPrivilegeGroups", "OperatePrivilegeGroup",
    "RunAnalyzer", "AddFileResource", "RemoveFileResource", "ListFileResources", "AddUserTags",
    "DeleteUserTags", "GetUserTags", "ListUsersWithTag", "CreateRowPolicy", "DropRowPolicy",
    "ListRowPolicies", "UpdateReplicateConfiguration", "GetReplicateConfiguration", "GetReplicateInfo",
    "CreateReplicateStream", "DumpMessages", "ComputePhraseMatchSlop", "CreateSnapshot", "DropSnapshot",
    "ListSnapshots", "DescribeSnapshot", "RestoreSnapshot", "RestoreExternalSnapshot", "ExportSnapshot",
    "GetExportSnapshotState", "GetRestoreSnapshotState", "ListRestoreSnapshotJobs", "PinSnapshotData",
    "UnpinSnapshotData", "AlterCollectionSchema", "BatchUpdateManifest", "RefreshExternalCollection",
    "GetRefreshExternalCollectionProgress", "ListRefreshExternalCollectionJobs",)

DEFAULT_READS: tuple[str, ...] = ("Search", "HybridSearch", "Query")

_READ_PREFIXES = ("Describe", "BatchDescribe", "Get", "Has", "Show", "List", "Select")
_STREAMING = ("CreateReplicateStream", "DumpMessages")     # server streaming: not a unary read
MAY_READ: frozenset[str] = frozenset(
    m for m in ALL
    if m in DEFAULT_READS or m in ("CalcDistance", "RunAnalyzer", "ComputePhraseMatchSlop", "CheckHealth")
    or (m.startswith(_READ_PREFIXES) and m not in _STREAMING)
)


def path(method: str) -> str:
    """The HTTP/2 :path of a MilvusService method, as nginx sees it."""
    return f"/{SERVICE}/{method}"

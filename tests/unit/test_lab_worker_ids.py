"""The lab client's read-back of acknowledged ids is complete past Milvus' 16,384-row
query window (bench/vs_recipe.py counted 1,846 rows "lost" when a collection outgrew it)."""

import re

from havip.lab import milvus_worker as mw


class FakeMilvus:
    """query() as Milvus answers it: at most `limit` (<= 16,384) rows matching an id range."""

    def __init__(self, ids):
        self.rows = sorted(ids)

    def load_collection(self, *a, **kw):
        pass

    def query(self, collection, filter, output_fields, limit, consistency_level, timeout):
        assert limit <= 16384 and consistency_level == "Strong"
        lo = int(re.search(r"id >= (\d+)", filter)[1])
        m = re.search(r"id < (\d+)", filter)
        hi = int(m[1]) if m else float("inf")
        return [{"id": i} for i in self.rows if lo <= i < hi][:limit]


def _session(fake):
    s = mw.Session.__new__(mw.Session)
    s.collection = "c"
    s.call = lambda fn: fn(fake)
    return s


def test_ids_reads_every_row_past_the_query_window():
    ids = set(range(0, 40_000, 2)) | {39_999}            # 20,001 rows, gaps as after failed batches
    s = _session(FakeMilvus(ids))
    assert s.ids(upto=40_000)["ids"] == sorted(ids)
    # the old single query (still what a call without `upto` does) reads short: the bug
    assert len(s.ids()["ids"]) == 16384

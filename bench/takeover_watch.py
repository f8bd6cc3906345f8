"""Watch a Milvus standalone server that was just started on a takeover (run inside the
new host's namespace by bench/milvus_takeover.py): prints one JSON line per change.

    python bench/takeover_watch.py T0 BUDGET COLLECTION [--sweep]

T0 is the wall-clock time of `docker start`; every line carries `t`, seconds after it.
Events: `sessions` (the keys under by-dev/meta/session/ with ServerID, address and lease,
each time the set changes), `healthy` (CheckHealth first OK), `loaded` (GetLoadState
Loaded), `searchable` (a pymilvus search answered), `sweep` (havip's session sweep
result, with --sweep: it runs in a thread as the daemon's container worker would).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from havip.checks import milvus_grpc as mg  # noqa: E402
from havip.runtime.etcdclient import b64, unb64  # noqa: E402

T0, BUDGET, COLL = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
SWEEP = "--sweep" in sys.argv
ETCD = "http://127.0.0.1:2379"
PREFIX = "by-dev/meta/session/"


def say(event: str, **kw) -> None:
    print(json.dumps({"t": round(time.time() - T0, 3), "event": event, **kw}), flush=True)


def sessions() -> list[dict] | None:
    import requests

    try:
        r = requests.post(f"{ETCD}/v3/kv/range", timeout=0.5,
                          json={"key": b64(PREFIX), "range_end": b64(PREFIX[:-1] + "0")})
        kvs = r.json().get("kvs", [])
    except Exception:  # noqa: BLE001 - etcd not up yet
        return None
    out = []
    for kv in kvs:
        key, value = unb64(kv["key"]), unb64(kv.get("value"))
        try:
            v = json.loads(value)
            if not isinstance(v, dict):
                raise ValueError
            out.append({"key": key[len(PREFIX):], "id": v.get("ServerID"), "addr": v.get("Address"),
                        "lease": kv.get("lease"), "create_rev": kv.get("create_revision")})
        except ValueError:
            out.append({"key": key[len(PREFIX):], "value": value[:40], "lease": kv.get("lease")})
    return out


def search_ok() -> str | None:
    from pymilvus import MilvusClient

    try:
        c = MilvusClient(uri="http://127.0.0.1:19530", timeout=2)
        c.search(COLL, data=[[0.5] * 8], limit=1, timeout=2)
        c.close()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc)[:160]


def main() -> None:
    if SWEEP:      # as havip's daemon does after `docker start` (this host holds the lease)
        from havip.runtime.sessions import StaleSessionClearer

        class Log:
            def info(self, event, **kw):
                say("sweep_" + event, **kw)
            warning = error = info
        StaleSessionClearer(ETCD, "by-dev", 60, lambda: True, log=Log(), request_timeout=0.3)()
    last = None
    healthy = loaded = searchable = None
    err = ""
    while time.time() - T0 < BUDGET:
        s = sessions()
        if s is not None:
            view = sorted((x["key"], x.get("id")) for x in s)
            if view != last:
                say("sessions", keys=s)
                last = view
        if healthy is None:
            ok, why = mg.check_health("127.0.0.1:19530", 1.0)
            if ok:
                healthy = time.time() - T0
                say("healthy")
        if healthy is not None and loaded is None:
            try:
                with mg.Connection("127.0.0.1:19530", 1.0) as c:
                    st = c.call(mg.GET_LOAD_STATE, collection_name=COLL).state
                if st == mg.LOADED:
                    loaded = time.time() - T0
                    say("loaded")
            except mg.CallFailed:
                pass
        if healthy is not None and searchable is None:
            err = search_ok()
            if err is None:
                searchable = time.time() - T0
                say("searchable")
        if searchable is not None and loaded is not None:
            time.sleep(6)   # the sessions settle (the old ones expire)
            s = sessions()
            say("sessions", keys=s)
            break
        time.sleep(0.1)
    say("end", healthy=healthy, loaded=loaded, searchable=searchable, last_error=err)


if __name__ == "__main__":
    main()

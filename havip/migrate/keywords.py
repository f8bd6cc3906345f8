"""What each keepalived keyword becomes in havip, and why some become nothing.

`SIMPLE` keywords map one value to one havip key. `INFO` keywords have no havip
equivalent and need none (a note). `WHY` gives the reason for keywords havip cannot
translate (untranslated); any keyword in none of the tables is untranslated too.
"""

# keepalived keyword -> (havip path, converter); values are checked by config.parse at the end.
SIMPLE = {
    "interface": ("interface", str),
    "virtual_router_id": ("virtual_router_id", int),
    "priority": ("priority", int),
    "advert_int": ("advert_interval", float),
    "version": ("version", int),
    "preempt_delay": ("preempt_delay", float),
    "unicast_src_ip": ("unicast.source", str),
    "garp_master_repeat": ("garp.repeat", int),
    "garp_master_refresh": ("garp.refresh", float),
    "garp_interval": ("garp.interval", float),
    "rt_priority": ("realtime_priority", int),
}
NOTIFY = {"notify_master": "master", "notify_backup": "backup", "notify_fault": "fault", "notify_stop": "stop"}
SCRIPT_CHECKS = {"interval": "check_interval", "timeout": "check_timeout", "rise": "rise", "fall": "fall"}
SECOND_BURST = ("havip sends its gratuitous ARPs as soon as it becomes master and has no second "
                 "burst; garp.refresh repeats them periodically")
# Statements with no havip equivalent that change nothing on the wire or for Milvus.
INFO = {
    "router_id": "names this host in keepalived's logs and emails; havip does not need it",
    "enable_script_security": "havip runs hooks directly, without a shell, as its own user",
    "script_user": "havip runs hooks directly, without a shell, as its own user",
    "preempt": "preempting is keepalived's and havip's default",
    "garp_master_delay": SECOND_BURST,
    "vrrp_garp_master_delay": SECOND_BURST,
}
WHY = {
    "include": "included files are not read; convert them separately",
    "virtual_server": "havip moves a VIP; it is not a load balancer (LVS)",
    "virtual_server_group": "havip moves a VIP; it is not a load balancer (LVS)",
    "vrrp_sync_group": "havip runs one instance per file; sync groups are not supported",
    "track_interface": "havip watches only its own interface",
    "track_process": "havip checks Milvus itself; tracked processes are not supported",
    "track_file": "havip checks Milvus itself; tracked files are not supported",
    "virtual_ipaddress_excluded": "havip advertises every address it adds; list them in virtual_ipaddresses",
    "virtual_routes": "havip adds addresses only, not routes",
    "virtual_rules": "havip adds addresses only, not rules",
    "mcast_src_ip": "havip sends from the interface's primary address",
    "use_vmac": "havip does not create a virtual MAC interface",
    "notify": "this script gets keepalived's own arguments; use notify.master/backup/fault/stop",
    "smtp_alert": "havip does not send email",
    "notification_email": "havip does not send email",
    "smtp_server": "havip does not send email",
    "garp_master_refresh_repeat": "havip's refresh sends garp.repeat messages, like the first burst",
}
WEIGHT = ("havip gives up mastership at once when the Milvus check fails, "
           "instead of lowering its priority by the weight")
# The order of keys in the YAML havip writes (the order of docs/configuration.md).
ORDER = ("interface", "virtual_router_id", "priority", "version", "advert_interval",
          "authentication.type", "authentication.password", "virtual_ipaddresses", "preempt",
          "preempt_delay", "realtime_priority", "unicast.source", "unicast.peers", "garp.repeat",
          "garp.interval", "garp.refresh", "milvus.container", "milvus.check_interval",
          "milvus.check_timeout", "milvus.rise", "milvus.fall", "notify.master", "notify.backup",
          "notify.fault", "notify.stop")

"""The configobj configspec of the executive's own sections of openais.conf(5): keys, types, ranges, defaults.

Sections are listed flat; where each may appear and whether it repeats is in
:data:`aisexec.config.schema.SECTIONS`.  A service's section (``quorum``,
``ckpt``, ``event``, ...) is declared by its plugin
(:class:`aisexec.config.sections.ConfigSection`), not here.  A check without ``default=`` is a
required key.  Defaults are the openais 0.80 / corosync 1.x ones.
"""

SPEC_TEXT = """\
[totem]
version = integer(min=2, max=2, default=2)
nodeid = integer(min=1, max=4294967295, default=None)
clear_node_high_bit = boolean(default=False)
cluster_name = string(min=1, max=255, default=None)
secauth = boolean(default=True)
keyfile = string(min=1, default=None)
crypto_cipher = option(none, chacha20, aes256, aes192, aes128, 3des, default=None)
crypto_hash = option(none, md5, sha1, sha256, sha384, sha512, default=None)
threads = integer(min=0, max=16, default=0)
rrp_mode = option(none, active, passive, default=none)
netmtu = integer(min=576, max=10000, default=1500)
transport = option(udp, udpu, default=udp)
token = integer(min=30, default=1000)
token_retransmit = integer(min=30, default=None)
hold = integer(min=30, default=None)
token_retransmits_before_loss_const = integer(min=1, default=4)
join = integer(min=30, default=50)
send_join = integer(min=0, default=0)
consensus = integer(min=30, default=None)
merge = integer(min=30, default=200)
downcheck = integer(min=30, default=1000)
fail_recv_const = integer(min=1, default=2500)
seqno_unchanged_const = integer(min=1, default=30)
heartbeat_failures_allowed = integer(min=0, default=0)
max_network_delay = integer(min=0, default=50)
window_size = integer(min=1, default=68)
max_messages = integer(min=1, default=34)
miss_count_const = integer(min=1, default=5)
token_linger = integer(min=0, max=10, default=1)
rrp_problem_count_timeout = integer(min=30, default=2000)
rrp_problem_count_threshold = integer(min=1, default=10)
rrp_token_expired_timeout = integer(min=1, default=None)
rrp_autorecovery_check_timeout = integer(min=30, default=1000)
vsftype = option(none, ykd, default=ykd)
votes = integer(min=1, max=1000, default=None)

[interface]
ringnumber = integer(min=0, max=1, default=0)
bindnetaddr = ip_address()
mcastaddr = ip_address(default=None)
mcastport = integer(min=1, max=65535, default=5405)
ttl = integer(min=0, max=255, default=1)
broadcast = boolean(default=False)

[member]
memberaddr = ip_address()
votes = integer(min=1, max=1000, default=1)

[logging]
to_stderr = boolean(default=True)
to_logfile = boolean(default=False)
to_file = boolean(default=None)
to_syslog = boolean(default=True)
logfile = string(min=1, default=None)
debug = option(on, off, trace, default=off)
timestamp = boolean(default=False)
fileline = boolean(default=False)
function_name = boolean(default=False)
tags = string(default=None)
syslog_facility = option(daemon, local0, local1, local2, local3, local4, local5, local6, local7, default=daemon)
syslog_priority = option(emerg, alert, crit, err, warning, notice, info, debug, default=info)
logfile_priority = option(emerg, alert, crit, err, warning, notice, info, debug, default=info)

[logger_subsys]
subsys = string(min=1, max=32)
debug = option(on, off, trace, default=None)
tags = string(default=None)
to_stderr = boolean(default=None)
to_logfile = boolean(default=None)
to_file = boolean(default=None)
to_syslog = boolean(default=None)
logfile = string(min=1, default=None)
timestamp = boolean(default=None)
fileline = boolean(default=None)
function_name = boolean(default=None)
syslog_facility = option(daemon, local0, local1, local2, local3, local4, local5, local6, local7, default=None)
syslog_priority = option(emerg, alert, crit, err, warning, notice, info, debug, default=None)
logfile_priority = option(emerg, alert, crit, err, warning, notice, info, debug, default=None)

[aisexec]
user = string(min=1, default=ais)
group = string(min=1, default=ais)
metrics_port = integer(min=0, max=65535, default=0)
metrics_address = ip_address(default=127.0.0.1)
ipc_memory_budget = integer(min=1048576, default=67108864)
ipc_frame_timeout = integer(min=100, max=3600000, default=10000)
ipc_max_connections_per_uid = integer(min=2, max=1000000, default=512)

[uidgid]
uid = string(min=1, default=None)
gid = string(min=1, default=None)
"""

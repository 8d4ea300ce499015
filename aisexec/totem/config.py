"""Totem timers and constants: defaults, derivation and consistency checks.

Values are in milliseconds (timers) or counts, with the openais/corosync 1.x
defaults.  ``token_retransmit``, ``hold`` and ``consensus`` are derived from
``token`` when not given, exactly as corosync 1.4's totemconfig does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

#: Smallest timeout accepted (3 ticks of a 100 Hz clock).
MIN_TIMEOUT_MS = 30
#: Largest frame budget accepted.
MAX_NETMTU = 10000
#: Hard protocol bounds.
MAX_NODES = 384
MAX_RTR_ENTRIES = 30
SORT_QUEUE_CAPACITY = 16384
MAX_MESSAGE_SIZE = 1024 * 1024
#: Message and token sequence numbers are 32 bits on the wire; a ring whose counters come this close to
#: 2**32 is replaced by a fresh one (same members, counters from 0) instead of wrapping.
SEQ_LIMIT = 2**32 - 1 - 4 * SORT_QUEUE_CAPACITY
#: ``crypto_cipher`` spellings -> the AEAD that seals packets with ``secauth: on`` (``none`` and unset:
#: the default; ``secauth`` alone turns protection on or off, an AEAD always authenticates).
CRYPTO_CIPHERS = {"chacha20": "chacha20-poly1305", "aes256": "aes-256-gcm"}
DEFAULT_CRYPTO_CIPHER = "aes-256-gcm"
#: corosync cipher names accepted by the configuration syntax but not offered (a config error names them).
UNOFFERED_CIPHERS = ("aes192", "aes128", "3des")


class TotemConfigError(ValueError):
    """An inconsistent or out-of-range Totem setting; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"totem.{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class TotemConfig:
    """Every timer and constant of ``totem { }`` the protocol core reads, and the envelope's cipher."""

    token: int = 1000
    token_retransmits_before_loss_const: int = 4
    token_retransmit: int = 0  # 0: derive from token
    hold: int = 0  # 0: derive from token_retransmit
    join: int = 50
    send_join: int = 0
    consensus: int = 0  # 0: derive as 1.2 * token
    merge: int = 200
    downcheck: int = 1000
    fail_recv_const: int = 2500
    seqno_unchanged_const: int = 30
    heartbeat_failures_allowed: int = 0
    max_network_delay: int = 50
    window_size: int = 68
    max_messages: int = 34
    miss_count_const: int = 5
    #: Longest a quiet token visit waits (ms) for a local client's answer to what it just delivered (0: never).
    token_linger: int = 1
    netmtu: int = 1500
    #: The AEAD of the packet envelope (a value of CRYPTO_CIPHERS; validate() maps the config spellings).
    crypto_cipher: str = DEFAULT_CRYPTO_CIPHER

    def derived(self) -> TotemConfig:
        """Return a copy with the derived timers filled in (corosync 1.4 rules)."""
        token_retransmit = self.token_retransmit or int(
            self.token / (self.token_retransmits_before_loss_const + 0.2)
        )
        hold = self.hold or max(int(token_retransmit * 0.8 - 10), 1)
        consensus = self.consensus or int(1.2 * self.token)
        return replace(self, token_retransmit=token_retransmit, hold=hold, consensus=consensus)

    @property
    def heartbeat_timeout(self) -> int:
        """Heartbeat timeout in ms, or 0 when the heartbeat is off."""
        if self.heartbeat_failures_allowed <= 0:
            return 0
        timeout = self.heartbeat_failures_allowed * self.token_retransmit + self.max_network_delay
        return timeout if timeout < self.token else 0

    def validate(self) -> TotemConfig:
        """Check ranges and relations; return the derived config or raise TotemConfigError."""
        cfg = self.derived()
        cipher = resolve_crypto_cipher(cfg.crypto_cipher)
        if cipher != cfg.crypto_cipher:
            cfg = replace(cfg, crypto_cipher=cipher)
        for name in ("token", "token_retransmit", "hold", "join", "consensus", "merge", "downcheck"):
            if getattr(cfg, name) < MIN_TIMEOUT_MS:
                raise TotemConfigError(name, f"{getattr(cfg, name)} ms is below the minimum of {MIN_TIMEOUT_MS} ms")
        if cfg.netmtu > MAX_NETMTU or cfg.netmtu < 576:
            raise TotemConfigError("netmtu", f"{cfg.netmtu} is outside 576..{MAX_NETMTU}")
        if cfg.consensus <= cfg.token:
            raise TotemConfigError(
                "consensus",
                f"{cfg.consensus} ms must be above token ({cfg.token} ms); use at least 1.2 x token",
            )
        if cfg.consensus < cfg.join:
            raise TotemConfigError("consensus", f"{cfg.consensus} ms must be at least join ({cfg.join} ms)")
        if cfg.token_retransmit >= cfg.token:
            raise TotemConfigError("token_retransmit", "must be below token")
        if cfg.hold >= cfg.token_retransmit:
            raise TotemConfigError("hold", "must be below token_retransmit")
        if not 0 <= cfg.token_linger < cfg.token_retransmit:
            raise TotemConfigError("token_linger", "must be 0 (off) or more, and below token_retransmit")
        if cfg.max_messages < 1 or cfg.window_size < 1:
            raise TotemConfigError("window_size", "window_size and max_messages must be at least 1")
        if cfg.max_messages > cfg.window_size:
            raise TotemConfigError(
                "max_messages", f"{cfg.max_messages} must not exceed window_size ({cfg.window_size})"
            )
        counts = ("token_retransmits_before_loss_const", "fail_recv_const", "seqno_unchanged_const", "miss_count_const")
        for name in counts:
            if getattr(cfg, name) < 1:
                raise TotemConfigError(name, "must be at least 1")
        if cfg.send_join < 0 or cfg.heartbeat_failures_allowed < 0 or cfg.max_network_delay < 0:
            raise TotemConfigError("send_join", "negative values are not allowed")
        return cfg

    @classmethod
    def from_mapping(cls, values: dict) -> TotemConfig:
        """Build from a mapping of ``totem`` keys (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kwargs: dict = {k: int(v) for k, v in values.items() if k in names and v is not None and k != "crypto_cipher"}
        kwargs["crypto_cipher"] = resolve_crypto_cipher(values.get("crypto_cipher"))
        return cls(**kwargs).validate()


def resolve_crypto_cipher(value: str | None) -> str:
    """The AEAD that ``totem.crypto_cipher`` names (TotemConfigError for one that is not offered)."""
    if value is None or value == "none" or value == "":
        return DEFAULT_CRYPTO_CIPHER
    if value in CRYPTO_CIPHERS.values():
        return value
    if value in CRYPTO_CIPHERS:
        return CRYPTO_CIPHERS[value]
    offered = ", ".join(f"{name} ({aead})" for name, aead in CRYPTO_CIPHERS.items())
    what = f"corosync's {value}" if value in UNOFFERED_CIPHERS else repr(value)
    raise TotemConfigError("crypto_cipher", f"{what} is not offered: use one of {offered}, or leave it unset "
                                            f"for {DEFAULT_CRYPTO_CIPHER}")

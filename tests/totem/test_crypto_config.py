"""``totem.crypto_cipher``: spellings, refusals with file and line, and a real ring of mixed ciphers."""

from __future__ import annotations

import pytest

from aisexec.config.errors import ConfigError
from aisexec.config.validated import validate_tree
from aisexec.localcluster import LocalCluster
from aisexec.totem import crypto
from aisexec.totem.config import CRYPTO_CIPHERS, DEFAULT_CRYPTO_CIPHER, TotemConfig, TotemConfigError
from plugins.config_default.parser import parse_text

BASE = """\
totem {
    version: 2
    transport: udpu
%s    interface {
        bindnetaddr: 127.0.0.1
        member {
            memberaddr: 127.0.0.1
        }
    }
}
"""


def totem_config(lines: str = "") -> TotemConfig:
    """The validated TotemConfig of BASE with ``lines`` added to its totem section."""
    return validate_tree(parse_text(BASE % lines, "t.conf"), source="t.conf", iface="default").totem_config


@pytest.mark.parametrize(("value", "aead"), [
    (None, "aes-256-gcm"),
    ("none", "aes-256-gcm"),
    ("chacha20", "chacha20-poly1305"),
    ("aes256", "aes-256-gcm"),
])
def test_crypto_cipher_names_the_aead(value, aead):
    lines = "" if value is None else f"    crypto_cipher: {value}\n    crypto_hash: sha256\n"
    assert totem_config(lines).crypto_cipher == aead


@pytest.mark.parametrize("value", ["aes128", "aes192", "3des"])
def test_corosync_ciphers_not_offered_are_refused_naming_the_line(value):
    with pytest.raises(ConfigError) as err:
        totem_config(f"    crypto_cipher: {value}\n")
    text = str(err.value)
    assert "crypto_cipher" in text and value in text and "aes256" in text and "t.conf" in text and ":4" in text


def test_totem_config_maps_spellings_and_knows_only_what_the_envelope_offers():
    assert TotemConfig().crypto_cipher == DEFAULT_CRYPTO_CIPHER == crypto.DEFAULT_CIPHER
    assert TotemConfig(crypto_cipher="aes256").validate().crypto_cipher == "aes-256-gcm"
    assert TotemConfig.from_mapping({"crypto_cipher": "aes-256-gcm", "token": "2000"}).crypto_cipher == "aes-256-gcm"
    with pytest.raises(TotemConfigError, match="crypto_cipher"):
        TotemConfig(crypto_cipher="rot13").validate()
    assert sorted(CRYPTO_CIPHERS.values()) == sorted(crypto.CIPHERS)


@pytest.mark.multiprocess
def test_nodes_sealing_with_different_ciphers_form_one_ring(tmp_path):
    """Node 1 seals with AES-256-GCM (the default), node 2 with ChaCha20-Poly1305: each opens the other's."""
    with LocalCluster(tmp_path, 2, transport="udpu", secauth=True) as cluster:
        config = cluster.nodes[1].config_file
        config.write_text(config.read_text().replace("totem {\n", "totem {\n\tcrypto_cipher: chacha20\n", 1))
        cluster.start_all()
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        assert "Initializing transmit/receive security: aes-256-gcm" in cluster.log(1)
        assert "Initializing transmit/receive security: chacha20-poly1305" in cluster.log(2)
        out = cluster.client(1, "from openais import cfg\nwith cfg.initialize() as h:\n    print(h.ring_status())")
        assert out.returncode == 0, out.stderr

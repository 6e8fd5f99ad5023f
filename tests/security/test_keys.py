import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.security.keys import PKCS1_PUBLIC_HEADER, PublicKeyError, key_id, load_public_key


def test_pkcs1_pem_gives_the_plugins_key_id(keys):
    pem = keys.public_pem.decode()
    body = "".join(pem.strip().splitlines()[1:-1])
    assert keys.public.key_id == body[:20]
    assert keys.public.key_id.startswith("MIIBCgKCAQEA")  # every RSA-2048 PKCS#1 key
    assert keys.public.pem == pem.strip()


def test_key_id_ignores_whitespace_and_line_endings(keys):
    pem = keys.public_pem.decode()
    assert key_id(pem.replace("\n", "\r\n")) == keys.public.key_id
    assert key_id("  " + pem.replace("\n", " \n ")) == keys.public.key_id
    assert key_id("") == ""


def test_spki_pem_is_normalised_to_pkcs1(keys):
    spki = keys.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    loaded = load_public_key(spki)
    assert loaded.pem.startswith(PKCS1_PUBLIC_HEADER)
    assert loaded.key_id == keys.public.key_id


def test_capacitor_config_json(keys):
    config = {
        "appId": "com.example",
        "plugins": {"CapacitorUpdater": {"publicKey": keys.public_pem.decode()}},
    }
    assert load_public_key(json.dumps(config, indent=2)).key_id == keys.public.key_id


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
        '{"plugins": {}}',
        '{"plugins": {"CapacitorUpdater": {"publicKey": 3}}}',
        '{"plugins": {"CapacitorUpdater": {"publicKey": ""}}}',
        "[1, 2",
    ],
)
def test_not_a_key(text):
    with pytest.raises(PublicKeyError):
        load_public_key(text)


def test_non_rsa_and_wrong_size_keys_are_refused():
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(PublicKeyError, match="not an RSA"):
        load_public_key(ec_pem.decode())
    small = (
        rsa.generate_private_key(65537, 1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    with pytest.raises(PublicKeyError, match="1024 bits"):
        load_public_key(small.decode())

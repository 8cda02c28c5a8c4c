"""Credential drift's pure parts: the stores' own stored verifiers checked against a password.

The two verifiers below were made by the stores themselves (PostgreSQL 15: CREATE ROLE ...
PASSWORD in a rolled-back transaction; RabbitMQ 3.10: rabbit_password:hash/2), for the password
"correct horse battery"."""

from __future__ import annotations

import hashlib
import json

from deploysuite.deploy.drift import (
    postgres_matches,
    rabbit_matches,
    rabbit_user_hash,
    redis_cli_argv,
    redis_password_hashes,
    scram_matches,
    verifier_sql,
)

PASSWORD = "correct horse battery"
SCRAM = (
    "SCRAM-SHA-256$4096:QOuGvgLfISx/4UslV7WXpw==$tEJMM61DsonVJA2MeOi6UqWisABrCDRkB3CWnvV275w="
    ":MkaR8OqcqXxdtO7cMJd4B78Tt925sptBN8y0aFePumQ="
)
RABBIT = "IIJviOXbAlmqkIzSA6IuT70HgD2DS7BXC9YRezlvaNDB/qqt"
SHA256 = "rabbit_password_hashing_sha256"


def test_postgres_scram_verifier_accepts_only_its_password():
    assert scram_matches(SCRAM, PASSWORD)
    assert not scram_matches(SCRAM, PASSWORD + " ")
    assert postgres_matches(SCRAM, "anyone", PASSWORD)


def test_postgres_md5_verifier():
    verifier = "md5" + hashlib.md5(b"s3cretalice").hexdigest()
    assert postgres_matches(verifier, "alice", "s3cret")
    assert not postgres_matches(verifier, "alice", "other")


def test_a_malformed_verifier_is_no_match_not_a_crash():
    assert not scram_matches("SCRAM-SHA-256$x", PASSWORD)
    assert not scram_matches("", PASSWORD)
    assert not rabbit_matches("!!!", PASSWORD, SHA256)
    assert not rabbit_matches(RABBIT, PASSWORD, "rabbit_password_hashing_unknown")


def test_rabbitmq_hash_accepts_only_its_password():
    assert rabbit_matches(RABBIT, PASSWORD, SHA256)
    assert not rabbit_matches(RABBIT, "correct horse", SHA256)


def test_the_user_is_found_in_the_exported_definitions():
    definitions = json.dumps({"users": [
        {"name": "other", "password_hash": "x", "hashing_algorithm": SHA256},
        {"name": "mysaaschat", "password_hash": RABBIT, "hashing_algorithm": SHA256},
    ]})  # fmt: skip
    assert rabbit_user_hash("Exporting definitions\n" + definitions, "mysaaschat") == (
        RABBIT,
        SHA256,
    )
    assert rabbit_user_hash(definitions, "nobody") is None
    assert rabbit_user_hash("Error: not running", "mysaaschat") is None


def test_the_role_name_cannot_break_out_of_the_query():
    assert verifier_sql("a'; DROP TABLE x; --") == (
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'a; DROP TABLE x; --'"
    )


def test_redis_password_hashes_are_read_from_acl_getuser():
    a, b = "a" * 64, "0123456789abcdef" * 4
    reply = f"flags\non\nsanitize-payload\npasswords\n{a}\n{b}\ncommands\n+@all\nkeys\n~*\n"
    assert redis_password_hashes(reply) == {a, b}
    assert redis_password_hashes("flags\non\npasswords\ncommands\n+@all\n") == set()
    assert redis_password_hashes("WRONGPASS invalid username-password pair\n") is None
    argv = redis_cli_argv("r-1", "ACL", "GETUSER", "app")
    assert argv[:5] == ("docker", "exec", "r-1", "sh", "-c") and argv[-4:] == (
        "sh", "ACL", "GETUSER", "app")  # fmt: skip
    assert "REDIS_PASSWORD_FILE" in argv[5]  # the password comes from inside the container

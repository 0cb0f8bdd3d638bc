"""ROWSTREAM_API_KEYS entries (``app.ingest.keys``): plain and hashed keys, names and their
default labels, scopes, rotation (several valid at once), and malformed entries refused with a
message that names no secret."""

import hashlib

import pytest

from app.ingest.keys import hashed_entry, label, match, parse, parse_all
from app.settings import ConfigError, load

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_plain_and_hashed_entries_of_one_key_are_the_same_key():
    plain, hashed = parse("k-123"), parse(hashed_entry("k-123"))
    assert plain.digest == hashed.digest == hashlib.sha256(b"k-123").digest()
    assert plain.name == hashed.name == label(plain.digest) == f"key-{plain.digest.hex()[:8]}"
    assert (plain.plain, hashed.plain) == ("k-123", None)
    assert "k-123" not in repr(plain)


def test_names_scopes_and_keys_holding_equals_signs():
    named = parse(f"tenant-a=k-1:{APP.upper()}")
    assert (named.name, named.plain, named.apps) == ("tenant-a", "k-1", frozenset({APP}))
    assert parse(hashed_entry("k-2", "ops")).name == "ops"
    padded = parse("YWJjZA==")  # base64 padding is not a name
    assert padded.plain == "YWJjZA==" and padded.name.startswith("key-")
    assert parse("x=y=z").plain == "y=z"  # named "x"


def test_rotation_two_keys_valid_at_once_and_each_matches_only_itself():
    keys = parse_all(["old-key", hashed_entry("new-key", "new")])
    assert match("old-key", keys).plain == "old-key"
    assert match("new-key", keys).name == "new"
    assert match("other", keys) is None


@pytest.mark.parametrize(
    "entries, problem",
    [
        (["sha256:abc"], "64 lowercase hex"),
        (["sha256:" + hashed_entry("k")[7:].upper()], "64 lowercase hex"),
        (["k-1:not-a-uuid"], "app IDs separated by |"),
        (["k-1", hashed_entry("k-1")], "same key"),
        (["a=k-1", "a=k-2"], "named 'a'"),
        ([":" + APP], "empty"),
    ],
)
def test_malformed_entries_are_refused_naming_no_secret(entries, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        parse_all(entries)
    assert "k-1" not in str(caught.value) and "k-2" not in str(caught.value)
    with pytest.raises(ConfigError, match="ROWSTREAM_API_KEYS"):
        load({"ROWSTREAM_API_KEYS": ",".join(entries)})

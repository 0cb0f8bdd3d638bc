"""API keys: bearer parsing, unknown keys, scopes, and what needs an unscoped key."""

import pytest

from app.ingest.auth import Refused, authenticate, check_scope, require_admin
from app.ingest.keys import hashed_entry, parse_all

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
KEYS = parse_all(["admin-key", f"scoped-key:{APP}"])


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic YWRtaW4ta2V5", "admin-key"])
def test_a_missing_or_malformed_bearer_is_401_and_asks_for_bearer(header):
    with pytest.raises(Refused) as refused:
        authenticate(header, KEYS)
    assert refused.value.status == 401
    assert dict(refused.value.headers) == {"WWW-Authenticate": "Bearer"}


def test_an_unknown_key_is_401_and_not_echoed():
    with pytest.raises(Refused) as refused:
        authenticate("Bearer sk-guess", KEYS)
    assert refused.value.status == 401
    assert "sk-guess" not in refused.value.error


def test_a_known_key_gives_its_scope():
    assert authenticate("Bearer admin-key", KEYS).apps is None
    assert authenticate("bearer  scoped-key ", KEYS).apps == frozenset({APP})


def test_admin_needs_an_unscoped_key():
    require_admin("Bearer admin-key", KEYS)
    with pytest.raises(Refused) as refused:
        require_admin("Bearer scoped-key", KEYS)
    assert refused.value.status == 403


def test_a_scoped_key_may_touch_only_its_apps():
    scoped = authenticate("Bearer scoped-key", KEYS)
    check_scope(scoped, [APP])
    other = "ff8fad5b-d9cb-469f-a165-70867728950e"
    with pytest.raises(Refused) as refused:
        check_scope(scoped, [APP, other])
    assert refused.value.status == 403
    assert refused.value.problems == [
        {"where": "app_id", "problem": f"{other} is outside the key's scope"}
    ]
    check_scope(authenticate("Bearer admin-key", KEYS), [APP, other])


def test_a_hashed_entry_authenticates_its_key_and_nothing_else():
    keys = parse_all([hashed_entry("s3cret-rotated", "ops"), f"{hashed_entry('team-key')}:{APP}"])
    assert authenticate("Bearer s3cret-rotated", keys).name == "ops"
    assert authenticate("Bearer team-key", keys).apps == frozenset({APP})
    for wrong in ("s3cret-rotate", "s3cret-rotated2", hashed_entry("s3cret-rotated")[7:], "ops"):
        with pytest.raises(Refused) as refused:
            authenticate(f"Bearer {wrong}", keys)
        assert refused.value.status == 401
    require_admin("Bearer s3cret-rotated", keys)
    with pytest.raises(Refused):
        require_admin("Bearer team-key", keys)

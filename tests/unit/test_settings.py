"""Configuration errors stop the worker with one clear line naming the variable."""

import re
from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load, redact_dsn
from app.sink.control import ControlError, Seed

TWO = "postgresql://h/a,postgresql://h/b"


def test_defaults_run_the_embedded_stack():
    settings = load({})
    assert settings.partitions == 24 and len(settings.shards) == 2
    assert settings.slot_map == (0,) * 128 + (1,) * 128
    assert settings.keys == ()


def test_values_are_parsed_from_the_environment():
    settings = load(
        {
            "ROWSTREAM_SHARDS": "postgresql://h/a, postgresql://h/b ,postgresql://h/c",
            "ROWSTREAM_PARTITIONS": "720",
            "ROWSTREAM_API_KEYS": "k1,k2",
            "ROWSTREAM_BATCH_WAIT": "0.2",
            "ROWSTREAM_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.shards == ("postgresql://h/a", "postgresql://h/b", "postgresql://h/c")
    assert settings.keys == ("k1", "k2") and "k1" not in repr(settings)
    assert (settings.partitions, settings.batch_wait, settings.log_level) == (720, 0.2, "debug")
    assert settings.internal_partitions == 36  # 12 per shard unless set


def test_the_internal_topic_has_its_own_partition_count():
    settings = load({"ROWSTREAM_PARTITIONS": "720", "ROWSTREAM_INTERNAL_PARTITIONS": "48"})
    layout = Seed.of(settings).layout()
    assert (layout.source.block, layout.internal.block) == (360, 24)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"ROWSTREAM_PARTITIONS": "25"}, "ROWSTREAM_PARTITIONS (25) must be divisible"),
        (
            {"ROWSTREAM_INTERNAL_PARTITIONS": "9"},
            "ROWSTREAM_INTERNAL_PARTITIONS (9) must be divisible by the number of shards",
        ),
    ],
)
def test_a_cluster_is_seeded_only_with_partitions_that_split_over_its_shards(environ, message):
    settings = load(environ)  # fine as settings: a cluster seeded before may have fewer shards
    with pytest.raises(ControlError, match=re.escape(message)):
        Seed.of(settings)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"ROWSTREAM_NOPE": "1"}, "unknown setting ROWSTREAM_NOPE"),
        (
            {"ROWSTREAM_INTERNAL_PARTITIONS": "-2"},
            "ROWSTREAM_INTERNAL_PARTITIONS: Input should be greater than or equal to 0",
        ),
        ({"ROWSTREAM_PARTITIONS": "many"}, "ROWSTREAM_PARTITIONS: Input should be a valid integer"),
        (
            {"ROWSTREAM_PARTITIONS": "0"},
            "ROWSTREAM_PARTITIONS: Input should be greater than or equal to 1",
        ),
        (  # the DSN is not echoed: it may hold a password
            {"ROWSTREAM_SHARDS": "postgresql://h/a,mysql://u:pw@h/a"},
            "ROWSTREAM_SHARDS: shard 1 is not a postgresql:// URL",
        ),
        ({"ROWSTREAM_SHARDS": ""}, "ROWSTREAM_SHARDS: name at least one shard DSN"),
        (
            {"ROWSTREAM_SHARDS": TWO, "ROWSTREAM_SHARD_MAP": "00-7e=0,80-ff=1"},
            "ROWSTREAM_SHARD_MAP does not cover 1 of 256 slots (first: 7f)",
        ),
        ({"ROWSTREAM_LOG_LEVEL": "loud"}, "ROWSTREAM_LOG_LEVEL: must be one of"),
        ({"ROWSTREAM_WEB_PORT": "70000"}, "ROWSTREAM_WEB_PORT: Input should be less than or equal"),
        ({"ROWSTREAM_BATCH_WAIT": "-1"}, "ROWSTREAM_BATCH_WAIT: Input should be greater than 0"),
    ],
)
def test_configuration_errors_are_one_clear_line(environ, message):
    with pytest.raises(ConfigError) as caught:
        load(environ)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_scoped_api_keys():
    app = "0f8fad5b-d9cb-469f-a165-70867728950e"
    settings = load(
        {"ROWSTREAM_API_KEYS": f"admin,team:{app.upper()}|ff8fad5b-d9cb-469f-a165-70867728950e"}
    )
    assert [(key.plain, key.apps) for key in settings.scoped_keys] == [
        ("admin", None),
        ("team", frozenset({app, "ff8fad5b-d9cb-469f-a165-70867728950e"})),
    ]
    assert settings.keys == ("admin", "team")
    for bad in ("team:not-a-uuid", ":" + app, "a,,b:"):
        with pytest.raises(ConfigError, match="ROWSTREAM_API_KEYS"):
            load({"ROWSTREAM_API_KEYS": bad})


def _readme_settings() -> dict[str, str]:
    """The README's configuration table: variable -> default column, as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n\n**", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`ROWSTREAM_"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_the_readme_configuration_table_is_the_settings():
    documented = _readme_settings()
    assert set(documented) == {f"ROWSTREAM_{name.upper()}" for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        written, default = documented[f"ROWSTREAM_{name.upper()}"], field.default
        if isinstance(default, bool):
            assert written == str(default).lower(), name
        elif isinstance(default, (int, float)) and not (default == 0 and " " in written):
            assert float(written) == default, name  # (0 described in words: computed)
        elif isinstance(default, str) and default:
            assert written == default, name
        else:  # an empty or computed default is described in words
            assert written in ("empty", "none", "even") or " " in written or "<" in written, name


def test_topic_names_carry_the_prefix_and_labels_drop_it():
    settings = load({"ROWSTREAM_TOPIC_PREFIX": "prod."})
    assert settings.topic("rowstream-lag") == "prod.rowstream-lag"
    assert settings.unprefixed("prod.rowstream-lag") == "rowstream-lag"
    assert settings.unprefixed("other.topic") == "other.topic"  # not ours: as it is
    assert load({}).unprefixed("rowstream-lag") == "rowstream-lag"


def test_a_dsn_shown_anywhere_has_its_password_replaced():
    assert (
        redact_dsn("postgresql://u:S3c%40@h:5432/db?sslmode=verify-full")
        == "postgresql://u:***@h:5432/db?sslmode=verify-full"
    )
    assert redact_dsn("postgresql://u@h/db?sslmode=require&password=S3c") == (
        "postgresql://u@h/db?sslmode=require&password=***"
    )
    assert redact_dsn("postgresql://h/db") == "postgresql://h/db"  # nothing to hide

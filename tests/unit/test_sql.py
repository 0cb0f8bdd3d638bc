"""The SQL text and parameters, exactly."""

import orjson

from app.sink import sql
from app.sink.coalesce import Patch


def test_upsert_is_one_merge_with_a_version_guard():
    statement, params = sql.upsert(
        [
            Patch(
                "0f8fad5b-d9cb-469f-a165-70867728950e",
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                7,
                {"plan": "pro", "trial": None},
            ),
            Patch(
                "ff8fad5b-d9cb-469f-a165-70867728950e",
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                3,
                {"n": 1},
            ),
        ]
    )
    assert statement == sql.UPSERT
    assert "MERGE INTO subscriptions AS s" in statement
    assert "WHEN MATCHED AND s.version < b.v THEN" in statement
    assert "jsonb_strip_nulls(s.properties || b.p)" in statement
    assert "VALUES (b.a, b.s, jsonb_strip_nulls(b.p), b.v)" in statement
    assert orjson.loads(params["batch"]) == [
        {
            "a": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "s": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "v": 7,
            "p": {"plan": "pro", "trial": None},
        },
        {
            "a": "ff8fad5b-d9cb-469f-a165-70867728950e",
            "s": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "v": 3,
            "p": {"n": 1},
        },
    ]


def test_select_row_is_parameterised():
    statement, params = sql.select_row("a", "b")
    assert "%(app_id)s" in statement and "%(subscription_id)s" in statement
    assert params == {"app_id": "a", "subscription_id": "b"}


def test_schema_matches_the_data_model():
    for column in (
        "app_id          uuid        NOT NULL",
        "properties      jsonb       NOT NULL",
        "version         bigint      NOT NULL",
        "PRIMARY KEY (app_id, subscription_id)",
    ):
        assert column in sql.SCHEMA
    assert "CREATE TABLE IF NOT EXISTS" in sql.SCHEMA

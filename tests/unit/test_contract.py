"""What a write request becomes (``app.ingest.contract``): IDs, bodies and the records of the
update topic, as ``app.model.events`` defines them."""

import orjson
import pytest

from app.ingest import contract
from app.ingest.errors import HttpError
from app.model import events

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "ff8fad5b-d9cb-469f-a165-70867728950e"
SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize(
    "spelling", [APP, APP.upper(), "{" + APP + "}", APP.replace("-", ""), "urn:uuid:" + APP]
)
def test_any_uuid_spelling_becomes_the_canonical_text(spelling):
    assert contract.canonical_uuid(spelling, "app_id") == APP


@pytest.mark.parametrize("bad", ["", "nope", APP[:-1], APP + "0", "g" * 32])
def test_a_bad_uuid_is_400_naming_where(bad):
    with pytest.raises(HttpError) as error:
        contract.canonical_uuid(bad, "subscription_id")
    assert error.value.status == 400
    assert error.value.problems == [{"where": "subscription_id", "problem": "not a UUID"}]


def test_bodies_are_validated_with_their_problems_named():
    assert contract.patch(APP, SUB, b'{"properties": {"a": 1, "b": null}}') == [
        (APP, SUB, {"a": 1, "b": None})
    ]
    with pytest.raises(HttpError) as error:
        contract.patch(APP, SUB, b'{"properties": {"a": [1]}}')
    assert error.value.problems[0]["where"] == "properties.a"
    with pytest.raises(HttpError) as error:
        contract.post(
            b'[{"app_id": "%b", "subscription_id": "x", "properties": {}}]' % APP.encode()
        )
    assert [p["where"] for p in error.value.problems] == ["[0].subscription_id"]
    with pytest.raises(HttpError):
        contract.post(b"{not json")


def test_records_one_per_app_in_request_order_an_update_batch_where_an_app_has_more():
    updates = [(APP, SUB, {"n": 1}), (OTHER, SUB, {"n": 2}), (APP, SUB, {"n": 3})]
    partitions = {APP: 3, OTHER: 7}
    trace = [("traceparent", b"00-abc-def-01")]
    records = contract.to_records(updates, partitions.__getitem__, 1700000000.5, trace)
    assert [(r.partition, r.key) for r in records] == [(3, APP.encode()), (7, OTHER.encode())]
    batch, single = records
    assert batch.headers == [*trace, (events.UPDATES_HEADER, b"2")]
    assert single.headers == trace
    decoded, bad = events.decode_source(batch.value)  # what the repartition reads
    assert bad == [] and [u.properties for u in decoded] == [{"n": 1}, {"n": 3}]
    assert orjson.loads(single.value) == {
        "app_id": OTHER, "subscription_id": SUB, "properties": {"n": 2},
        "received_at": 1700000000.5,
    }  # fmt: skip

"""The topics' names before the deployment's prefix (``ROWSTREAM_TOPIC_PREFIX``): a wire
contract, renaming one is a migration. Kept apart from ``app.kafka.topics`` (the worker's topic
objects) so that the ingest tier names its topic without loading Faust."""

UPDATES = "subscription-updates"
INTERNAL = "rowstream-by-subscription"
DEAD_LETTERS = "rowstream-dead-letters"
SHARD_STATS = "rowstream-shard-stats"
LAG = "rowstream-lag"

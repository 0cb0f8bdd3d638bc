"""The wire contracts: what an update, a batch record and a dead letter are, and where each row
goes. Pure: no Kafka, no Postgres, no settings."""

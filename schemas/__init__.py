"""Data contracts of closedloop: topics, Avro schemas and ClickHouse migrations."""

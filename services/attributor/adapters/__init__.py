"""I/O adapters of the attributor: Kafka in, ClickHouse out."""

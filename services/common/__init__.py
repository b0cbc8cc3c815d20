"""Plumbing shared by the services: settings, Avro codec, Kafka helpers, errors, logging."""

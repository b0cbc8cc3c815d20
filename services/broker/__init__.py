"""The local Kafka broker that `make run` and the tests start: Apache Kafka (KRaft), or Tansu without Java."""

"""The embedded ClickHouse warehouse: the ClickHouse HTTP interface over chDB, and the migrations."""

"""The attributor: credits deal value to touchpoints under every model, into ClickHouse."""

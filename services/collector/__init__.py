"""The collector: tracking beacons over HTTP into events.raw."""

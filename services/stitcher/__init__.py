"""The stitcher: sessions, channels and identity stitching from events.raw into touchpoints."""

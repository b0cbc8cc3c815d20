"""The closedloop services: collector, stitcher, crm_ingest, attributor and their plumbing."""

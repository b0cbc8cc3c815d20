"""The demo: seeded traffic and CRM simulator, its ground truth, and the player that posts it."""

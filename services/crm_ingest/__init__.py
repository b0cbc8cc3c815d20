"""crm_ingest: authenticated CRM deal-stage webhooks into crm.deal_stages."""

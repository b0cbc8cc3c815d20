"""One adapter per CRM behind the CrmAdapter interface; adding a CRM is adding a module here."""

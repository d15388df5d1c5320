"""profile-service: Admin REST API: organization model, mobile offline profiles, publish events."""

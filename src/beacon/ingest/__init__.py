"""The ingest edge: wire formats in, validated events committed with their outbox rows."""

"""Federation: the guarded partner link (config, guard, outbox, link, status, CLI)."""

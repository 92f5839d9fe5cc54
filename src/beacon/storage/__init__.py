"""The write path every domain shares: one transaction at a time on SQLite, group commit, the
transactional outbox.

- `Database` (`sqlite.py`, `postgres.py`) opens transactions (`Tx`): SQL written once for both
  databases (`core.sql.Sql`), the raw connection for a domain's batched statements, and
  `Tx.enqueue` to publish bus messages once the transaction commits.
- `Writer` (`writer.py`) is what domains submit work to: jobs submitted while a transaction runs
  share the next one (`commit.GroupCommitter`); each kind of job has its domain's batch handler.
"""

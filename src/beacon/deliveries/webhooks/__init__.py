"""Webhooks that can be trusted: message activity in eSputnik's format, and chosen event types
as JSON or to Amplitude's HTTP API v2, batched per endpoint, signed (Standard Webhooks), retried
with the same `webhook-id`, logged.

`endpoints` (managing them), `formats` (what an element and a body are), `collect` (the
consumer gathering elements from events), `batches` (the timer making batches), `sender` (the
consumer posting them), `service` and `routes` (the admin API).
"""

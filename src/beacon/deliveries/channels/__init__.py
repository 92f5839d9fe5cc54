"""Channels: one `send(rendered, recipient) -> SendResult` per way out, in an explicit registry.

`base` holds the interface, results and recipients; `registry` the specs and factories
(`default_registry`); one module per channel: `email`, `sms`, `push` (Web Push and FCM),
`webhook`, `capture`; `answers` reads HTTP providers' answers into results.
"""

"""Durable timers: rows with a unique key, a time and a kind, fired once each by a handler."""

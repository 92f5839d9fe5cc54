"""The SDK's version, sent in every request's User-Agent and event context."""

VERSION = "0.1.0"

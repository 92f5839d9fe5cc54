"""Standard Webhooks signatures: the package's own verifier accepts them under each secret."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from beacon.deliveries.signing import WebhookSigner, check_secret, new_secret

BODY = b'[{"contactId": 1, "activityStatus": "READ"}]'


def now() -> datetime:
    # The package's verifier compares the timestamp with its own clock (5 minutes' tolerance).
    return datetime.now(UTC)


def test_each_secret_of_a_rotation_verifies_what_is_sent() -> None:
    old, new = new_secret(), new_secret()
    headers = WebhookSigner(secrets=[new, old]).headers(
        webhook_id="msg_01", timestamp=now(), body=BODY
    )

    assert headers["webhook-id"] == "msg_01"
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    for secret in (old, new):
        assert Webhook(secret).verify(BODY, headers) == [{"contactId": 1, "activityStatus": "READ"}]
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(BODY + b" ", headers)


def test_every_attempt_keeps_the_id_and_signs_its_own_timestamp() -> None:
    secret = new_secret()
    signer = WebhookSigner(secrets=[secret])
    first = signer.headers(webhook_id="d-7", timestamp=now() - timedelta(seconds=70), body=BODY)
    retry = signer.headers(webhook_id="d-7", timestamp=now(), body=BODY)

    assert first["webhook-id"] == retry["webhook-id"] == "d-7"
    assert first["webhook-timestamp"] != retry["webhook-timestamp"]
    assert first["webhook-signature"] != retry["webhook-signature"]
    Webhook(secret).verify(BODY, retry)
    replayed = {**retry, "webhook-timestamp": first["webhook-timestamp"]}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, replayed)


def test_new_secrets_are_in_the_whsec_form() -> None:
    secret = new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert check_secret(secret) == secret
    assert new_secret() != secret


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ([], "a list of one or more"),
        ("whsec_abc", "a list of one or more"),
        (["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "must start with 'whsec_'"),
        (["whsec_not base64!"], "not base64"),
        (["whsec_" + base64.b64encode(b"x" * 8).decode()], "holds 8 bytes; it needs 24 to 64"),
        ([new_secret(), "whsec_" + base64.b64encode(b"x" * 65).decode()], "secret 2 of 2 holds 65"),
    ],
)
def test_bad_secrets_are_refused_naming_the_problem(secrets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookSigner(secrets=secrets)


def test_bad_ids_and_naive_times_are_refused() -> None:
    signer = WebhookSigner(secrets=[new_secret()])
    with pytest.raises(ValueError, match="without dots, spaces or line breaks"):
        signer.headers(webhook_id="a.b", timestamp=now(), body=BODY)
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.headers(webhook_id="a", timestamp=datetime(2025, 1, 1), body=BODY)  # noqa: DTZ001

"""SMS through Twilio's Messages API, or any provider speaking its format.

`POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, HTTP Basic with the account
SID and auth token, a form of `To`, `Body` and `From` (or `MessagingServiceSid`). A 201 carries
the message's `sid`. Error bodies are JSON with a numeric `code`: 21610 means the recipient
replied STOP, so the number is unsubscribed; other 4xx fail for good, 429 and 5xx for now.

Each message asks for its delivery status at its own signed `StatusCallback` URL (when Beacon
has a public URL; `feedback.record_sms_status` applies what comes back): an SMS the carrier
could not deliver becomes `message.undelivered` with Twilio's error code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from beacon.deliveries.channels.answers import (
    PROVIDER_ANSWER_LIMIT,
    json_answer,
    result_of,
    result_of_error,
)
from beacon.deliveries.channels.base import (
    ChannelSpec,
    Outcome,
    PhoneNumber,
    Recipient,
    SendResult,
    mismatch,
)
from beacon.deliveries.channels.registry import ChannelServices, read_settings, settings_spec
from beacon.deliveries.outbound import OutboundError, OutboundHttp
from beacon.deliveries.templates import Rendered

UNSUBSCRIBED_CODE = 21610


@dataclass(frozen=True, slots=True, kw_only=True)
class TwilioSettings:
    """A Twilio account (or a provider with its API) and who messages come from."""

    account_sid: str = field(metadata={"doc": "account SID (the Basic user name)"})
    auth_token: str = field(repr=False, metadata={"doc": "auth token", "secret": True})
    from_number: str | None = field(
        default=None, metadata={"doc": "sender number (E.164) or alphanumeric sender id"}
    )
    messaging_service_sid: str | None = field(
        default=None, metadata={"doc": "messaging service SID, instead of from_number"}
    )
    base_url: str = field(default="https://api.twilio.com", metadata={"doc": "the API's base URL"})
    status_callback: str | None = field(
        default=None,
        metadata={
            "doc": "URL Twilio posts delivery status to; unset, Beacon's own signed"
            " /m/sms-status/ link when BEACON_PUBLIC_URL is set"
        },
    )

    def __post_init__(self) -> None:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give from_number or messaging_service_sid (one of them)")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {self.base_url!r} is not an absolute http(s) URL")


SPEC = ChannelSpec(
    name="sms",
    description="SMS through Twilio's Messages API (or a provider speaking its format)",
    kinds=("sms",),
    recipient="a phone number in E.164 form",
    settings=settings_spec(TwilioSettings),
)


class SmsChannel:
    """Sends text messages through one Twilio account."""

    spec = SPEC

    def __init__(
        self,
        settings: TwilioSettings,
        *,
        outbound: OutboundHttp,
        status_url: Callable[[str], str] | None = None,
    ) -> None:
        self._settings = settings
        self._outbound = outbound
        self._status_url = status_url
        sid = quote(settings.account_sid, safe="")
        self._url = f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Post the message; Twilio's answer decides the outcome."""
        wrong = mismatch(SPEC, rendered, recipient, PhoneNumber)
        if wrong:
            return SendResult.permanent(wrong)
        assert isinstance(recipient, PhoneNumber)
        s = self._settings
        form = {"To": recipient.number, "Body": rendered.parts["text"]}
        if s.from_number is not None:
            form["From"] = s.from_number
        if s.messaging_service_sid is not None:
            form["MessagingServiceSid"] = s.messaging_service_sid
        if s.status_callback is not None:
            form["StatusCallback"] = s.status_callback
        elif self._status_url is not None:
            form["StatusCallback"] = self._status_url(rendered.delivery_id)
        try:
            response = await self._outbound.post(
                self._url,
                content=urlencode(form).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                auth=(s.account_sid, s.auth_token),
                read_limit=PROVIDER_ANSWER_LIMIT,
            )
        except OutboundError as error:
            return result_of_error(error)
        body = json_answer(response)
        result = result_of(response, provider_id=_text(body.get("sid")))
        if result.outcome is not Outcome.ACCEPTED and body.get("code") == UNSUBSCRIBED_CODE:
            return SendResult(
                outcome=Outcome.FAILED_PERMANENT,
                description=result.description,
                unsubscribe=True,
                latency_ms=result.latency_ms,
            )
        return result


def create(settings: Mapping[str, Any], services: ChannelServices) -> SmsChannel:
    """Return the SMS channel the configuration describes."""
    read = read_settings(TwilioSettings, settings, channel="sms")
    return SmsChannel(read, outbound=services.outbound, status_url=services.status_url)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

"""Beacon's Python SDK: send server-side events to `POST /api/v1/events`, batched and retried.

    from beacon_sdk import Client

    beacon = Client("WRITE_KEY", "http://127.0.0.1:8686")
    beacon.track("SHIPPING_STATUS", user_id="42", properties={"status": "In Transit"})

`Client` sends from a background thread, `AsyncClient` from an asyncio task; neither ever
raises delivery problems into the host application (they go to `on_error`).
"""

from beacon_sdk.async_client import AsyncClient
from beacon_sdk.client import Client
from beacon_sdk.delivery import OnError
from beacon_sdk.errors import BeaconError, DeliveryError, QueueFullError, RejectedError
from beacon_sdk.retry import RetryPolicy
from beacon_sdk.version import VERSION

__version__ = VERSION
__all__ = [
    "AsyncClient",
    "BeaconError",
    "Client",
    "DeliveryError",
    "OnError",
    "QueueFullError",
    "RejectedError",
    "RetryPolicy",
    "__version__",
]

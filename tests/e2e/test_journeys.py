"""The journeys issue's acceptance scenarios, through a real `beacon serve` process on a manual
clock: events go in through the server API and `/collect`, the example journeys are applied
with `beacon journeys apply`, time moves with `POST /api/clock/advance`, and what would go out
is read back as the delivery requests the journeys made (`/api/journeys/{name}/messages`).

One deployment serves the module: every test has people of its own, and the clock only moves
forward, so a test's advance also fires what others left waiting (never for their people).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from beacon import journeys
from tests.beacon_process import BeaconProcess
from tests.journeys_driver import Shop, subjects, wait_for

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "journeys-e2e-admin-token"
EXAMPLES = Path(journeys.__file__).parent / "examples"
DAY = 86_400


@pytest.fixture(scope="module")
def beacon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeaconProcess]:
    workdir = tmp_path_factory.mktemp("journeys")
    process = BeaconProcess.on(
        f"sqlite:///{workdir / 'beacon.db'}",
        workdir,
        admin_token=ADMIN_TOKEN,
        settings={"clock": "manual", "relay_sweep_seconds": "0.5"},
    )
    process.cli("migrate")
    process.cli("journeys", "apply", *sorted(str(p) for p in EXAMPLES.glob("*.yaml")))
    with process.running():
        yield process


@pytest.fixture(scope="module")
def shop(beacon: BeaconProcess) -> Iterator[Shop]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=beacon.url, headers=headers, timeout=10.0) as http:
        now = datetime.fromisoformat(http.get("/api/clock").json()["now"])
        noon = (now + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        # Midday, so no example's quiet hours hold a message back while the tests run.
        assert http.post("/api/clock/advance", json={"to": noon.isoformat()}).status_code == 200
        yield Shop.open(http)


def test_welcome_after_onboarding(shop: Shop) -> None:
    shop.send("onb-1", "ONBOARDING_DONE")
    [welcome] = shop.wait_messages("onboarding", "onb-1", 1)
    assert welcome["channel"] == "push"
    assert welcome["content"]["title"] == "Welcome!"


def test_reminder_a_day_after_onboarding_only_without_signup(shop: Shop) -> None:
    shop.send("onb-quiet", "ONBOARDING_DONE")
    shop.send("onb-signed", "ONBOARDING_DONE")
    shop.send("onb-signed", "SIGNUP", name="Sam")
    shop.wait_messages("onboarding", "onb-quiet", 1)
    shop.wait_messages("onboarding", "onb-signed", 1)
    shop.wait_messages("signup-congratulation", "onb-signed", 1)  # SIGNUP was handled

    shop.advance(DAY - 60)
    assert len(shop.messages("onboarding", "onb-quiet")) == 1  # not a day yet
    shop.advance(61)

    assert subjects(shop.messages("onboarding", "onb-quiet")) == ["Welcome!", "One step left"]
    assert subjects(shop.messages("onboarding", "onb-signed")) == ["Welcome!"]
    [signed] = shop.runs("onb-signed", "onboarding")
    assert signed["status"] == "completed"
    assert [step["step"] for step in signed["path"]] == ["welcome", "wait_for_signup"]
    assert signed["path"][-1]["why"].startswith("event: ")


def test_congratulation_on_signup(shop: Shop) -> None:
    shop.send("signup-1", "SIGNUP", name="Ann")
    [message] = shop.wait_messages("signup-congratulation", "signup-1", 1)
    assert message["content"]["title"] == "Congratulations, {{ event.properties.name }}!"
    assert message["variables"]["event"]["properties"]["name"] == "Ann"
    shop.send("signup-1", "SIGNUP", name="Ann")  # entry once: no second congratulation
    shop.barrier("signup-1")
    assert len(shop.messages("signup-congratulation", "signup-1")) == 1


def test_product_viewed_more_than_once(shop: Shop) -> None:
    shop.send("viewer", "VIEWPRODUCT", product="p-1")
    shop.send("viewer", "VIEWPRODUCT", product="p-2")
    shop.barrier("viewer")
    assert shop.messages("product-scarcity", "viewer") == []

    shop.send("viewer", "VIEWPRODUCT", product="p-1")
    [scarce] = shop.wait_messages("product-scarcity", "viewer", 1)
    assert scarce["variables"]["event"]["properties"]["product"] == "p-1"
    shop.send("viewer", "VIEWPRODUCT", product="p-1")  # once per product
    shop.barrier("viewer")
    assert len(shop.messages("product-scarcity", "viewer")) == 1


def test_back_in_stock_subscribers_hear_of_their_product(shop: Shop) -> None:
    for user, product in (("bis-1", "sku-9"), ("bis-2", "sku-9"), ("bis-3", "sku-8")):
        shop.send(user, "STOCK_ALERT_SUBSCRIBED", product=product)
        shop.barrier(user)

    shop.collect("PRODUCT_RESTOCKED", product="sku-9")

    for user in ("bis-1", "bis-2"):
        [push] = shop.wait_messages("back-in-stock", user, 1)
        assert push["channel"] == "push"
        assert push["variables"]["context"]["wait_for_restock"]["properties"]["product"] == "sku-9"
    # One transaction offered the restock to every run waiting for it: the others are settled.
    assert shop.messages("back-in-stock", "bis-3") == []
    [waiting] = shop.runs("bis-3", "back-in-stock")
    assert waiting["status"] == "active"
    assert waiting["waiting"]["match"] == {"product": "sku-8"}


def test_thirty_days_of_inactivity(shop: Shop) -> None:
    users = [f"idle-{n}" for n in range(6)]
    for user in users:
        shop.send(user, "app.open")
        shop.barrier(user)
    shop.send("busy", "app.open")
    shop.barrier("busy")

    shop.advance(29 * DAY)
    shop.send("busy", "page-view")  # activity moves the inactivity timer on
    shop.barrier("busy")
    assert all(shop.runs(user, "win-back") == [] for user in users)
    shop.advance(DAY + 60)

    for user in users:
        [run] = shop.runs(user, "win-back")
        assert run["trigger"] == "journey.inactivity"
        steps = [step["step"] for step in run["path"]]
        sent = [m["channel"] for m in shop.messages("win-back", user)]
        if run["status"] == "exited":  # the 10 % holdout
            assert (steps, sent, run["end_reason"]) == (["pick"], [], "holdout")
        else:
            assert steps[0] == "pick"
            assert sent == [steps[1]]  # the split's branch is the channel it sent on
    assert shop.runs("busy", "win-back") == []


def test_cart_abandoned_for_a_day_and_order_confirmation(shop: Shop) -> None:
    cart = {"qty": 2, "amount": 59.9, "currency": "EUR"}
    shop.send("buyer", "ADDTOCART", cart_id="c-1", **cart)
    shop.send("buyer", "ADDTOCART", cart_id="c-2", **cart)
    shop.send("buyer", "PURCHASE", cart_id="c-2", order_nr="O-7", **cart)

    [confirmation] = shop.wait_messages("order-confirmation", "buyer", 1)
    assert confirmation["content"]["subject"] == "Order {{ event.properties.order_nr }} confirmed"
    assert confirmation["variables"]["event"]["properties"]["order_nr"] == "O-7"
    runs = {r["key"]: r for r in shop.runs("buyer", "cart-abandonment")}
    assert runs["c-2"]["status"] == "exited"  # ended by its PURCHASE
    assert runs["c-1"]["status"] == "active"

    shop.advance(DAY + 1)
    [reminder] = shop.messages("cart-abandonment", "buyer")
    assert reminder["variables"]["event"]["properties"]["cart_id"] == "c-1"
    assert reminder["content"]["subject"] == "You left something in your cart"


def test_shipping_status_becomes_push_email_and_sms(shop: Shop) -> None:
    shop.send("shipped", "SHIPPING_STATUS", status="In Transit", order_nr="A-1")
    found = shop.wait_messages("shipping-status", "shipped", 3)
    assert [m["channel"] for m in found] == ["push", "email", "sms"]
    assert {m["variables"]["event"]["properties"]["status"] for m in found} == {"In Transit"}


def test_welcome_and_purchase_reminder_with_its_conversion(shop: Shop) -> None:
    shop.send("wpr-idle", "SIGNUP", name="Ida")
    shop.send("wpr-buyer", "SIGNUP", name="Bo")
    shop.wait_messages("welcome-purchase-reminder", "wpr-idle", 1)
    shop.wait_messages("welcome-purchase-reminder", "wpr-buyer", 1)
    shop.send("wpr-buyer", "PURCHASE", order_nr="O-9", qty=1, amount=5, currency="EUR")
    wait_for(
        lambda: shop.runs("wpr-buyer", "welcome-purchase-reminder")[0]["status"] == "converted",
        what="the purchase converting the run",
    )

    shop.advance(DAY + 1)

    assert subjects(shop.messages("welcome-purchase-reminder", "wpr-idle")) == [
        "Welcome, {{ event.properties.name }}",
        "Still looking, {{ event.properties.name }}?",
    ]
    assert len(shop.messages("welcome-purchase-reminder", "wpr-buyer")) == 1
    journey = shop.http.get("/api/journeys/welcome-purchase-reminder").json()
    assert journey["conversions"] >= 1


def test_a_dry_run_over_the_same_history_requests_the_same_messages(
    beacon: BeaconProcess, shop: Shop
) -> None:
    for user in ("sim-1", "sim-2"):
        shop.send(user, "SIGNUP", name=user)
        shop.wait_messages("welcome-purchase-reminder", user, 1)
    shop.send("sim-2", "PURCHASE", order_nr="O-1", qty=1, amount=1, currency="EUR")
    shop.barrier("sim-2")
    shop.advance(DAY + 1)

    for name in ("welcome-purchase-reminder", "cart-abandonment", "onboarding"):
        document = str(EXAMPLES / f"{name}.yaml")
        report = json.loads(beacon.cli("journeys", "simulate", document, "--since", "60d"))
        live = shop.http.get(f"/api/journeys/{name}/messages", params={"limit": 1000}).json()
        assert report["totals"]["messages"] == len(live) > 0
        simulated = {
            (m["idempotency_key"], m["profile_id"], m["channel"]) for m in report["messages"]
        }
        assert simulated == {(m["idempotency_key"], m["profile_id"], m["channel"]) for m in live}
        assert [m["content"] for m in sorted(report["messages"], key=_key)] == [
            m["content"] for m in sorted(live, key=_key)
        ]
    # The dry run wrote nothing: the live requests are as they were.
    after = shop.http.get("/api/journeys/onboarding/messages", params={"limit": 1000}).json()
    assert len(after) == len(live)


def _key(message: dict[str, object]) -> str:
    return str(message["idempotency_key"])

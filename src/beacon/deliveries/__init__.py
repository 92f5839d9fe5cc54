"""Deliveries: messaging, from a delivery request to the message's fate reported back.

The building blocks, each pure or with one small transport:

- `templates`: sandboxed Jinja2 templates with per-channel parts, checked when saved
  (`parse_template`) and rendered per send (`render`), a missing value failing the render;
  `tracking`: click tracking (`track_clicks`) and the open pixel (`add_open_pixel`);
- `links`: HMAC-signed links (open pixel, click redirect, view online, unsubscribe, one-click
  unsubscribe) with secret rotation;
- `retry`: `RetryPolicy`, the backoff schedule with jitter and `Retry-After`, stored as JSON;
- `outbound`: HTTP to addresses the operator does not control, refusing internal ones after DNS
  resolution and on every redirect;
- `signing`: Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`) with several secrets during a rotation;
- `activity`: the eSputnik message-activity webhook format and its status filters;
- `channels`: email (SMTP), SMS (Twilio's REST format), push (Web Push with VAPID, FCM HTTP v1),
  webhook and capture, behind one `Channel.send`, in an explicit registry.

The integration: `requests` (the delivery request, where journeys and back-ends hand over),
`library` (templates and messages), `worker` with `sending`, `recipients`, `instances`,
`leases`, `contacts`, `suppression` (the delivery worker), `feedback` and `tracking_routes`
(what comes back), `webhooks` (activity and event webhooks), `service`, `queries`, `routes`
(the admin API), `erasure`. See docs/architecture.md, Messaging.
"""

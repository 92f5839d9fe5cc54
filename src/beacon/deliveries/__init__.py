"""Deliveries: the building blocks of sending a message, each pure or with one small transport.

The delivery worker (not built yet) renders, signs, sends and retries with these:

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
- `activity`: the eSputnik message-activity webhook format, its batches and status filters;
- `channels`: email (SMTP), SMS (Twilio's REST format), push (Web Push with VAPID, FCM HTTP v1),
  webhook and capture, behind one `Channel.send`, in an explicit registry.
"""

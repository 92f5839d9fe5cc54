/*! Beacon web tracker (plain ES2017, no dependencies); usage in Beacon's README:
 *   <script src="https://beacon.example/tracker.js" data-source="SOURCE_ID" async></script>
 * Events wait in localStorage until Beacon acknowledges them; each has its own id, so a batch
 * sent twice is stored once. */
(() => {
  "use strict";
  const w = window, d = document, nav = navigator;
  if (w.beacon && w.beacon.version) return; // loaded twice

  const SESSION_MS = 30 * 60 * 1000; // a session ends after 30 minutes without events
  const BATCH = 20; // send at once when this many events wait
  const MAX_BATCH = 50; // events per request
  const MAX_BYTES = 60000; // keep-alive requests and beacons may carry 64 KiB in all
  const MAX_QUEUE = 1000; // past this, the oldest events go
  const MAX_BACKOFF_MS = 30000;
  const TIMEOUT_MS = 15000;
  const cfg = { source: null, host: "", flushInterval: 1000, debug: false };
  const warn = (...args) => cfg.debug && console.warn("[beacon]", ...args);
  const guard = (fn) => (...args) => {
    try {
      return fn(...args);
    } catch (e) {
      warn(e); // never throw into the host page
    }
  };

  let ls = null; // localStorage, unless the browser refuses it: then state lives in memory
  try {
    (ls = w.localStorage).setItem("beacon.test", "1");
    ls.removeItem("beacon.test");
  } catch (e) {
    ls = null;
  }
  const mem = {}; // what was last read or written
  const load = guard((name) => {
    if (ls) mem[name] = ls.getItem("beacon." + name);
    return JSON.parse(mem[name] || "null");
  });
  const save = guard((name, value) => {
    mem[name] = JSON.stringify(value);
    try {
      if (ls) ls.setItem("beacon." + name, mem[name]);
    } catch (e) {
      ls = null; // full: memory from now on
    }
  });
  const erase = guard((name) => {
    delete mem[name];
    if (ls) ls.removeItem("beacon." + name);
  });

  const uuid = () => {
    const c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID(); // secure contexts only
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.random() * 256;
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join("-");
  };

  const sessionId = () => {
    let s = load("session");
    const now = Date.now();
    if (!s || !s.id || !(now - s.at < SESSION_MS)) s = { id: uuid() };
    s.at = now;
    save("session", s);
    return s.id;
  };

  const context = () => {
    let timezone;
    try {
      timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {} // eslint-disable-line no-empty
    return {
      page: { url: location.href, path: location.pathname, title: d.title, referrer: d.referrer },
      browser: { user_agent: nav.userAgent, language: nav.language, timezone },
      screen: { width: screen.width, height: screen.height },
    };
  };

  // A snapshot of a plain object (later changes by the page do not leak in); else {}.
  const plain = (v) => (v && typeof v === "object" && !Array.isArray(v) ? JSON.parse(JSON.stringify(v)) : {});

  const enqueue = (type, properties) => {
    if (typeof type !== "string" || !type) return warn("the event type must be a non-empty string");
    const event = { id: uuid(), type, properties: plain(properties), time: new Date().toISOString() };
    const queue = load("queue") || [];
    queue.push({ s: sessionId(), c: context(), e: event });
    save("queue", queue.slice(-MAX_QUEUE));
    schedule(queue.length >= BATCH ? 0 : cfg.flushInterval);
  };

  // The first events of `queue` sharing a session, as a /track body whose context is the
  // first event's; an event captured on another page carries its own.
  const batch = (queue) => {
    if (!cfg.source || !queue.length) return null;
    const first = queue[0], page = JSON.stringify(first.c);
    let events = [];
    for (const item of queue) {
      if (item.s !== first.s || events.length === MAX_BATCH) break;
      events.push(JSON.stringify(item.c) === page ? item.e : Object.assign({ context: item.c }, item.e));
    }
    const body = { source: { id: cfg.source }, session: { id: first.s }, context: first.c, events };
    const profile = load("profile");
    if (profile) body.profile = { id: profile };
    let json = JSON.stringify(body);
    while (new Blob([json]).size > MAX_BYTES && events.length > 1) {
      body.events = events = events.slice(0, Math.ceil(events.length / 2));
      json = JSON.stringify(body);
    }
    return { json, ids: events.map((e) => e.id), small: new Blob([json]).size <= MAX_BYTES };
  };

  const drop = (ids) => {
    const sent = new Set(ids);
    save("queue", (load("queue") || []).filter((item) => !sent.has(item.e.id)));
  };

  let timer = 0, due = 0, sending = false, failures = 0, retryAt = 0;
  const schedule = (ms) => {
    const at = Math.max(Date.now() + ms, retryAt);
    if (timer && due <= at) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(() => {
      timer = 0;
      flush();
    }, at - Date.now());
  };
  // Backoff: 1 s doubling per failure up to 30 s, times a random 0.5..1 so tabs spread out.
  const retryLater = () => {
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures++);
    retryAt = Date.now() + backoff * (0.5 + Math.random() / 2);
    schedule(0);
  };

  // Send one batch with fetch: 2xx and 4xx (but 429) settle it; anything else is retried.
  const send = async () => {
    if (sending) return;
    if (Date.now() < retryAt) return schedule(0);
    const next = batch(load("queue") || []);
    if (!next) return;
    if (nav.onLine === false) return retryLater(); // the "online" event sends sooner
    sending = true;
    let status = 0, answer = null;
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(cfg.host + "/track", {
        method: "POST",
        body: next.json, // as text/plain: no preflight; Beacon reads JSON whatever the type
        keepalive: next.small,
        credentials: "omit",
        signal: abort.signal,
      });
      status = response.status;
      answer = await response.json();
    } catch (e) {
      if (!status) warn("cannot reach Beacon; will retry", e);
    } finally {
      clearTimeout(timeout);
      sending = false;
    }
    if (status < 200 || status >= 500 || status === 429) return retryLater();
    failures = retryAt = 0;
    drop(next.ids);
    if (status >= 300) warn("Beacon refused a batch; dropped it", status, answer);
    else if (answer && answer.profile && answer.profile.id) save("profile", answer.profile.id);
    if ((load("queue") || []).length) schedule(0);
  };
  const flush = () => send().catch(warn);

  // The page may be going away: hand the queue to sendBeacon, which outlives the page. It
  // cannot tell whether Beacon got the events, so they stay queued until a fetch is answered
  // (from this page if it stays, else from the next); Beacon stores them once.
  const beaconed = new Set();
  const flushOnHide = () => {
    if (!nav.sendBeacon || nav.onLine === false) return flush();
    let queue = (load("queue") || []).filter((item) => !beaconed.has(item.e.id));
    for (let next = batch(queue); next; next = batch(queue)) {
      if (!nav.sendBeacon(cfg.host + "/track", next.json)) return;
      next.ids.forEach((id) => beaconed.add(id));
      queue = queue.slice(next.ids.length);
    }
  };

  const page = (properties, referrer) => {
    const base = { url: location.href, path: location.pathname, title: d.title };
    base.referrer = referrer === undefined ? d.referrer : referrer;
    enqueue("page-view", Object.assign(base, plain(properties)));
  };
  let lastUrl = location.href, autoPage = false;
  const pageIfMoved = guard(() => {
    if (location.href === lastUrl) return;
    page({}, lastUrl);
    lastUrl = location.href;
  });
  const startAutoPage = () => {
    if (autoPage) return;
    autoPage = true;
    const push = history.pushState;
    history.pushState = function (...args) {
      const result = push.apply(this, args);
      pageIfMoved();
      return result;
    };
    w.addEventListener("popstate", pageIfMoved);
    page();
  };

  // Web Push: the subscription becomes the `push_subscription` trait (README: subscribePush).
  const pushTrait = (json) => enqueue("identify", { traits: { push_subscription: json } });
  const worker = async (o) => {
    const sw = nav.serviceWorker;
    if (o.registration || !sw) return o.registration;
    if (o.serviceWorker) await sw.register(o.serviceWorker);
    return o.serviceWorker ? sw.ready : sw.getRegistration(); // ready: active, can subscribe
  };
  const subscribePush = async (o) => {
    const reg = await worker(o), pm = reg && reg.pushManager;
    let key = o.publicKey;
    if (!pm) return warn("Web Push needs a service worker"), null;
    if (!key) {
      const response = await fetch(cfg.host + "/tracker/push-key", { credentials: "omit" });
      if (!response.ok) return warn("Beacon has no Web Push key", response.status), null;
      key = (await response.json()).public_key;
    }
    const bytes = Uint8Array.from(atob(String(key).replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
    let sub = await pm.getSubscription();
    const old = sub && sub.options && sub.options.applicationServerKey;
    if (sub && !(old && String(new Uint8Array(old)) === String(bytes))) await sub.unsubscribe(), (sub = null);
    sub = sub || (await pm.subscribe({ userVisibleOnly: true, applicationServerKey: bytes }));
    pushTrait(sub.toJSON());
    return sub.toJSON();
  };
  const unsubscribePush = async (o) => {
    const reg = await worker(o), sub = reg && reg.pushManager && (await reg.pushManager.getSubscription());
    if (sub) await sub.unsubscribe();
    pushTrait(null);
  };

  const api = {
    version: "1",
    init: guard((o) => {
      o = o || {};
      if (o.source) cfg.source = String(o.source);
      if (o.host) cfg.host = String(o.host).replace(/\/+$/, "");
      if (o.flushInterval >= 0) cfg.flushInterval = +o.flushInterval;
      if (o.debug !== undefined) cfg.debug = !!o.debug;
      if (o.autoPage) startAutoPage();
      schedule(0); // events left by an earlier page, if any
    }),
    track: guard(enqueue),
    page: guard((properties) => page(properties)),
    identify: guard((userId, traits) => {
      if (userId === undefined || userId === null || userId === "") return warn("identify needs a user id");
      enqueue("identify", { user_id: String(userId), traits: plain(traits) });
    }),
    flush: guard(() => {
      retryAt = 0;
      return flush();
    }),
    reset: guard(() => {
      erase("profile"); // someone else uses this browser from now on
      erase("session");
    }),
    subscribePush: (options) => subscribePush(options || {}).catch((e) => (warn(e), null)),
    unsubscribePush: (options) => unsubscribePush(options || {}).catch(warn),
    push: guard((call) => api[call[0]] && api[call[0]](...call.slice(1))),
  };

  const script = d.currentScript;
  const data = (script && script.dataset) || {};
  const queued = Array.isArray(w.beacon) ? w.beacon.slice() : [];
  w.beacon = api;
  guard(() => {
    const on = (value) => value === "true" || value === "";
    cfg.host = script && script.src ? new URL(script.src).origin : location.origin;
    api.init({ source: data.source, host: data.host, flushInterval: data.flushInterval, debug: on(data.debug) });
    // `init` calls queued before the script loaded come first, so every call knows its source.
    queued.filter((call) => call[0] === "init").forEach(api.push);
    if (on(data.autoPage)) startAutoPage();
    queued.filter((call) => call[0] !== "init").forEach(api.push);
    w.addEventListener("online", guard(() => {
      failures = retryAt = 0;
      schedule(0);
    }));
    d.addEventListener("visibilitychange", guard(() => d.visibilityState === "hidden" && flushOnHide()));
    w.addEventListener("pagehide", guard(flushOnHide));
  })();
})();

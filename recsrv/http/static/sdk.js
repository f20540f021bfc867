/* recsrv storefront SDK: reports what the shopper does and receives live recommendations.
 *
 *   <script src="https://recsrv.example/sdk.js"></script>
 *   const rec = Recsrv.init({ endpoint: "https://recsrv.example", key: "PUBLIC_KEY" });
 *
 * No dependencies, ES2017, no build step. It never throws into the page: failures are
 * logged with console.debug. The API is described in docs/sdk.md.
 */
(function (global) {
  "use strict";
  const SESSION_KEY = "recsrv_session";
  const SEEN_KEY = "recsrv_session_seen"; // the session's last activity, ms since the epoch
  const IDLE_MS = 30 * 60 * 1000; // a new session after this long without events
  const FLUSH_MS = 250; // queued events wait at most this long...
  const BATCH = 20; // ...or until this many are queued
  const POST_BATCH = 100; // events per POST (the server takes up to 1,000)
  const BEACON_BATCH = 50; // events per sendBeacon (a beacon carries at most 64 KiB)
  const MAX_QUEUE = 1000; // beyond this (server unreachable) the oldest events are dropped
  const script = document.currentScript;

  function debug(...args) {
    try { console.debug("[recsrv]", ...args); } catch (_) { /* no console */ }
  }

  function uuid() {
    try {
      if (global.crypto && crypto.randomUUID) return crypto.randomUUID();
    } catch (_) { /* not a secure context */ }
    const b = new Uint8Array(16);
    if (global.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const hex = Array.from(b, (x) => (x + 0x100).toString(16).slice(1)).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  const storage = {
    get(name) { try { return global.localStorage.getItem(name); } catch (_) { return null; } },
    set(name, value) { try { global.localStorage.setItem(name, value); } catch (_) { /* private mode */ } },
  };

  function query(params) {
    const parts = Object.keys(params)
      .filter((name) => params[name] !== undefined && params[name] !== null && params[name] !== "")
      .map((name) => encodeURIComponent(name) + "=" + encodeURIComponent(params[name]));
    return parts.length ? "?" + parts.join("&") : "";
  }

  // A server with keys takes only browsing events from a public key (403 for the rest,
  // which the shop's backend reports with its secret key). Such an event goes in a
  // request of its own, so a refusal never costs the browsing events queued beside it.
  const BROWSING = new Set(["view", "click", "add_to_cart", "remove_from_cart", "search"]);

  /** How many events from the head of the queue go together: a run of the same kind. */
  function runLength(queue, max) {
    const browsing = BROWSING.has(queue[0].type);
    let n = 1;
    while (n < queue.length && n < max && BROWSING.has(queue[n].type) === browsing) n++;
    return browsing ? n : 1;
  }

  function defaultEndpoint() {
    try { if (script && script.src) return new URL(script.src).origin; } catch (_) { /* inline */ }
    return global.location.origin;
  }

  class Client {
    constructor(options) {
      const o = options || {};
      this.endpoint = String(o.endpoint || defaultEndpoint()).replace(/\/+$/, "");
      this.key = o.key || null;
      this.userId = o.userId == null ? null : String(o.userId);
      this.k = o.k || 6;
      this.render = typeof o.render === "function" ? o.render : null;
      this.queue = [];
      this.timer = null;
      this.sending = null;
      this.backoffMs = 0;
      this.streams = new Set(); // open subscriptions: reopened when the session or user changes
      this._session = null;
      this._touch(false);
      global.addEventListener("pagehide", () => this._beacon());
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "hidden") this._beacon();
      });
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => this.scan());
      else this.scan();
    }

    get sessionId() { return this._session; }

    // -- events ------------------------------------------------------------------------
    view(itemId) { this.track("view", { item_id: String(itemId) }); }
    click(itemId) { this.track("click", { item_id: String(itemId) }); }
    addToCart(itemId, quantity) { this.track("add_to_cart", { item_id: String(itemId), quantity: quantity || 1 }); }
    removeFromCart(itemId, quantity) {
      this.track("remove_from_cart", quantity ? { item_id: String(itemId), quantity } : { item_id: String(itemId) });
    }
    search(text) { this.track("search", { query: String(text).slice(0, 512) }); }
    purchase(lines) { this.track("purchase", { items: lines }); } // lines: [{item_id, quantity?, price?}]

    track(type, fields) {
      try {
        this._touch(true);
        const base = { session_id: this._session, user_id: this.userId, ts: Date.now() / 1000, event_id: uuid() };
        this.queue.push(Object.assign(base, fields, { type }));
        if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
        if (this.queue.length >= BATCH && !this.backoffMs && !this.sending) this.flush();
        else this._schedule(Math.max(FLUSH_MS, this.backoffMs));
      } catch (e) { debug("track failed", e); }
    }

    identify(userId) {
      this.userId = userId == null ? null : String(userId);
      for (const sub of this.streams) sub.open();
    }

    /** Sends the queued events now; resolves when the server answered (never rejects). */
    flush() {
      clearTimeout(this.timer);
      this.timer = null;
      if (this.sending) return this.sending.then(() => this.flush());
      if (!this.queue.length) return Promise.resolve();
      const batch = this.queue.splice(0, runLength(this.queue, POST_BATCH));
      const body = JSON.stringify(batch);
      const headers = this._headers({ "Content-Type": "application/json" });
      this.sending = fetch(this.endpoint + "/v1/events", { method: "POST", body, headers, keepalive: body.length < 60000 })
        .then((response) => {
          if (response.ok) { this.backoffMs = 0; return; }
          if (response.status >= 500 || response.status === 429) throw new Error("HTTP " + response.status);
          return response.text().then((text) => debug("events refused", response.status, text)); // not retried
        })
        .catch((e) => { // kept, and sent again later after a growing pause
          debug("events not sent, will retry", e);
          this.queue = batch.concat(this.queue).slice(-MAX_QUEUE);
          this.backoffMs = Math.min((this.backoffMs || 500) * 2, 30000);
        })
        .then(() => {
          this.sending = null;
          if (this.queue.length >= BATCH && !this.backoffMs) this.flush();
          else if (this.queue.length) this._schedule(this.backoffMs || FLUSH_MS);
        });
      return this.sending;
    }

    // -- recommendations -----------------------------------------------------------
    subscribe(callback, options) {
      const o = options || {};
      const sub = { closed: false, source: null, retry: null, delayMs: 1000 };
      sub.open = () => {
        if (sub.source) sub.source.close();
        clearTimeout(sub.retry);
        if (sub.closed) return;
        const params = { k: o.k || this.k, category: o.category, user_id: this.userId, key: this.key };
        const path = `/v1/sessions/${encodeURIComponent(this._session)}/stream`;
        let source;
        try { source = new EventSource(this.endpoint + path + query(params)); } catch (e) { debug("no stream", e); return; }
        sub.source = source;
        source.addEventListener("recommendations", (message) => {
          sub.delayMs = 1000;
          let list;
          try { list = JSON.parse(message.data); } catch (e) { debug("bad list", e); return; }
          try { callback(list); } catch (e) { console.error("[recsrv] subscriber failed", e); }
        });
        source.onerror = () => {
          // EventSource reconnects by itself (with Last-Event-ID) unless the server refused
          // the stream (readyState CLOSED): then open it again later, after a growing pause.
          if (source.readyState !== 2 || sub.closed || sub.source !== source) return;
          debug("stream closed; reopening in", sub.delayMs, "ms");
          sub.retry = setTimeout(sub.open, sub.delayMs);
          sub.delayMs = Math.min(sub.delayMs * 2, 60000);
        };
      };
      this.streams.add(sub);
      sub.open();
      return () => {
        sub.closed = true;
        clearTimeout(sub.retry);
        if (sub.source) sub.source.close();
        this.streams.delete(sub);
      };
    }

    similar(itemId, k) { return this._get(`/v1/items/${encodeURIComponent(itemId)}/similar`, { k: k || this.k }); }
    boughtTogether(itemId, k) { return this._get(`/v1/items/${encodeURIComponent(itemId)}/bought-together`, { k: k || this.k }); }
    recommendations(options) {
      const o = options || {};
      const params = { session_id: this._session, user_id: this.userId, item_id: o.itemId, k: o.k || this.k, category: o.category };
      return this._get("/v1/recommendations", params);
    }

    // -- auto-fill -----------------------------------------------------------------
    /** Reports a view of each [data-recsrv-view] and keeps each [data-recsrv="recommendations"]
     *  filled; elements already handled are skipped, so a page may call it again. */
    scan(root) {
      try {
        const base = root || document;
        for (const el of base.querySelectorAll("[data-recsrv-view]")) {
          if (el.recsrvViewed) continue;
          el.recsrvViewed = true;
          this.view(el.getAttribute("data-recsrv-view"));
        }
        for (const el of base.querySelectorAll('[data-recsrv="recommendations"]')) {
          if (el.recsrvUnsubscribe) continue;
          const k = parseInt(el.getAttribute("data-recsrv-k"), 10) || this.k;
          const category = el.getAttribute("data-recsrv-category") || undefined;
          el.recsrvUnsubscribe = this.subscribe((list) => this._fill(el, list), { k, category });
        }
      } catch (e) { debug("scan failed", e); }
    }

    _fill(el, list) {
      const ul = document.createElement("ul");
      ul.className = "recsrv-list";
      for (const item of list.items || []) {
        const li = document.createElement("li");
        li.className = "recsrv-item";
        li.addEventListener("click", () => this.click(item.item_id));
        let shown = null;
        try { shown = this.render ? this.render(item) : null; } catch (e) { debug("render failed", e); }
        if (shown instanceof Node) {
          li.appendChild(shown);
        } else { // render gave a title, {title, url}, or nothing: a link
          const info = typeof shown === "string" ? { title: shown } : shown || {};
          const a = document.createElement("a");
          a.textContent = info.title || item.item_id;
          a.href = info.url || "#";
          a.setAttribute("data-item-id", item.item_id);
          li.appendChild(a);
        }
        ul.appendChild(li);
      }
      el.textContent = "";
      el.appendChild(ul);
      el.dispatchEvent(new CustomEvent("recsrv:update", { detail: list }));
    }

    // -- internals -----------------------------------------------------------------
    _touch(active) {
      // The session lives in localStorage, shared by the shop's tabs; an idle one is replaced.
      const now = Date.now();
      const stored = storage.get(SESSION_KEY);
      const fresh = stored && now - (Number(storage.get(SEEN_KEY)) || 0) < IDLE_MS;
      const id = fresh ? stored : uuid();
      if (!fresh) storage.set(SESSION_KEY, id);
      if (!fresh || active) storage.set(SEEN_KEY, String(now));
      if (id === this._session) return;
      const reopen = this._session !== null;
      this._session = id;
      if (reopen) for (const sub of this.streams) sub.open();
    }

    _schedule(ms) {
      if (!this.timer) this.timer = setTimeout(() => this.flush(), ms);
    }

    _beacon() {
      // The page may be going away: hand what is queued to the browser to deliver.
      clearTimeout(this.timer);
      this.timer = null;
      if (!navigator.sendBeacon) { this.flush(); return; }
      const url = this.endpoint + "/v1/events" + query({ key: this.key });
      while (this.queue.length) {
        const batch = this.queue.slice(0, runLength(this.queue, BEACON_BATCH));
        let sent = false;
        try {
          // text/plain: a "simple" request, no CORS preflight (which a closing page can't wait for).
          sent = navigator.sendBeacon(url, new Blob([JSON.stringify(batch)], { type: "text/plain" }));
        } catch (e) { debug("beacon failed", e); }
        if (!sent) { this._schedule(FLUSH_MS); return; } // kept, in case the page stays
        this.queue.splice(0, batch.length);
      }
    }

    _headers(headers) {
      if (this.key) headers.Authorization = "Bearer " + this.key;
      return headers;
    }

    _get(path, params) {
      return fetch(this.endpoint + path + query(params), { headers: this._headers({}) })
        .then((response) => {
          if (response.ok) return response.json();
          return response.text().then((text) => { debug("GET", path, response.status, text); return null; });
        })
        .catch((e) => { debug("GET", path, "failed", e); return null; });
    }
  }

  global.Recsrv = {
    version: "0.1.0",
    /** A client; null only if the browser lacks what the SDK needs (logged). */
    init(options) {
      try { return new Client(options); } catch (e) { debug("init failed", e); return null; }
    },
  };
})(window);

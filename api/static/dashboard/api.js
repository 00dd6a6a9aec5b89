// Talking to the API: JSON GETs that never throw, and the Server-Sent Events stream.
//
// The stream is read with fetch() rather than EventSource so that the token travels in the
// Authorization header (never in a URL that proxies and access logs keep), and so that the
// HTTP status of a refused stream (401, 403, 404) is visible to the page.

/** Decode a JWT's payload for display only (the API checks the signature and the scope). */
export function decodeClaims(token) {
  const parts = String(token || "").split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  /** GET a JSON document: {ok, status, data, detail}; status 0 when the server is unreachable. */
  async get(path, params = {}) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") query.set(k, v);
    }
    const url = query.toString() ? `${path}?${query}` : path;
    let res;
    try {
      res = await fetch(url, {
        headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      return { ok: false, status: 0, data: null, detail: String(err?.message || err) };
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    const detail = res.ok ? null : describe(data?.detail) || res.statusText || `HTTP ${res.status}`;
    return { ok: res.ok, status: res.status, data, detail };
  }
}

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d?.msg || JSON.stringify(d)).join("; ");
  return detail ? JSON.stringify(detail) : "";
}

/**
 * A resuming reader of `GET /v1/stream` (text/event-stream).
 *
 * onEvent({type, id, data}) for each message (data parsed as JSON when it is JSON);
 * onState("live" | "reconnecting", {status}) whenever the connection state changes.
 * Reconnects with a growing delay, sends Last-Event-ID, and gives up on a silent connection
 * after `idleMs` (the server sends a keep-alive comment every 15 s).
 */
export class LiveStream {
  constructor({ url, token, onEvent, onState, idleMs = 45000 }) {
    Object.assign(this, { url, token, onEvent, onState, idleMs });
    this.lastId = null;
    this.running = false;
    this.controller = null;
    this.delay = 1000;
    this.state = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    this.controller?.abort();
  }

  setState(state, info = {}) {
    if (state !== this.state || info.status) {
      this.state = state;
      this.onState?.(state, info);
    }
  }

  async loop() {
    while (this.running) {
      let status = 0;
      try {
        status = await this.connect();
      } catch {
        status = 0;
      }
      if (!this.running) return;
      this.setState("reconnecting", { status });
      // a missing route (not deployed yet) or a refused token: try again, but rarely
      const wait = status === 404 || status === 401 || status === 403 ? 30000 : this.delay;
      this.delay = Math.min(this.delay * 2, 8000);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" };
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    const res = await fetch(this.url, {
      headers,
      cache: "no-store",
      signal: this.controller.signal,
    });
    if (!res.ok || !res.body) {
      return res.status;
    }
    this.delay = 1000;
    this.setState("live");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let message = { type: "message", data: [], id: null };
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => this.controller.abort(), this.idleMs);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        buffer += decoder.decode(value, { stream: true });
        let nl = buffer.indexOf("\n");
        while (nl >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, "");
          buffer = buffer.slice(nl + 1);
          nl = buffer.indexOf("\n");
          if (line === "") {
            if (message.id !== null) this.lastId = message.id;
            if (message.data.length) this.dispatch(message);
            message = { type: "message", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") message.type = val || "message";
          else if (field === "data") message.data.push(val);
          else if (field === "id" && !val.includes("\0")) message.id = val;
          else if (field === "retry" && /^\d+$/.test(val)) this.delay = Number(val);
        }
      }
    } finally {
      clearTimeout(idle);
    }
    return 0;
  }

  dispatch(message) {
    const text = message.data.join("\n");
    let data = text;
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: hand the text over as it is
    }
    try {
      this.onEvent?.({ type: message.type, id: message.id, data });
    } catch (err) {
      console.error("stream handler failed", err);
    }
  }
}

// Calls to Liaison's REST API from the page: same origin, session cookie, CSRF header on POST
// and DELETE.
// A 401 anywhere means the web session ended: the page goes back to the sign-in page.

export class SessionExpired extends Error {}

/** An answer other than 2xx: ``status`` and ``body`` (the parsed JSON error, or null). */
export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor({ onExpired } = {}) {
    this.csrf = null;
    this.onExpired = onExpired ?? (() => window.location.assign("/login?expired=1"));
  }

  async request(method, path, body) {
    // X-Requested-With marks a script's request, so a server can answer 401 without a
    // WWW-Authenticate challenge (which would make the browser pop up its own sign-in box).
    const headers = { Accept: "application/json", "X-Requested-With": "liaison-map" };
    if (method !== "GET" && method !== "HEAD") {
      if (this.csrf) headers["X-CSRF-Token"] = this.csrf;
      if (body !== undefined) headers["Content-Type"] = "application/json";
    }
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      redirect: "manual",
    });
    // "opaqueredirect": the server sent us to /login, which is the same thing as a 401 here.
    if (res.status === 401 || res.type === "opaqueredirect") {
      this.onExpired();
      throw new SessionExpired(path);
    }
    return res;
  }

  async json(method, path, body) {
    const res = await this.request(method, path, body);
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      let parsed = null;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null; // not JSON: the message keeps the text
      }
      throw new ApiError(`${method} ${path}: ${res.status} ${text.trim()}`.trim(), res.status, parsed);
    }
    return res.json();
  }

  async me() {
    const me = await this.json("GET", "/api/v1/me");
    this.csrf = me.csrf ?? null;
    return me;
  }

  picture() {
    return this.json("GET", "/api/v1/picture");
  }

  async chatHistory(limit = 100) {
    const res = await this.request("GET", `/api/v1/chat?limit=${limit}`);
    if (res.status === 404 || res.status === 405) return null; // no chat route on this server
    if (!res.ok) throw new Error(`GET /api/v1/chat: ${res.status}`);
    return (await res.json()).messages ?? [];
  }

  sendChat(message) {
    return this.json("POST", "/api/v1/chat", message);
  }

  /** Draw an item into the picture (POST /api/v1/items): {item: Feature, delivered}. */
  drawItem(body) {
    return this.json("POST", "/api/v1/items", body);
  }

  /** Delete an item this user drew (DELETE /api/v1/items/{uid}). */
  deleteItem(uid) {
    return this.json("DELETE", `/api/v1/items/${encodeURIComponent(uid)}`);
  }

  track(uid) {
    return this.json("GET", `/api/v1/items/${encodeURIComponent(uid)}/track`);
  }

  /**
   * MBTiles metadata when the server has a tile set configured, else null. The server answers
   * 204 (no body) when it has none, so asking is never an error; older servers answer 404.
   */
  async tiles() {
    try {
      const res = await this.request("GET", "/api/v1/tiles");
      return res.status === 200 ? await res.json() : null;
    } catch (e) {
      if (e instanceof SessionExpired) throw e;
      return null;
    }
  }

  /** The feeds' status (docs/api.md "Feeds"), or null where the listener does not serve it. */
  async feeds() {
    const res = await this.request("GET", "/api/v1/feeds");
    if (res.status === 404 || res.status === 405) return null;
    if (!res.ok) throw new Error(`GET /api/v1/feeds: ${res.status}`);
    return res.json();
  }

  /** End the web session; the server answers with a redirect, which is not followed here. */
  async logout() {
    const headers = this.csrf ? { "X-CSRF-Token": this.csrf } : {};
    await fetch("/logout", { method: "POST", headers, credentials: "same-origin", redirect: "manual" });
  }
}

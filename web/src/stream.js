// The live feed: a WebSocket to /api/v1/stream with reconnection (exponential backoff with full
// jitter, reset once a connection has stayed up for a while).

// First retry delay, ceiling and "stable connection" period, in milliseconds.
export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_CAP_MS = 30000;
export const STABLE_MS = 15000;

/** Delay before attempt ``failures`` + 1: uniform in [0, min(cap, base * 2^failures)]. */
export function backoffDelay(failures, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures, 16));
  return Math.max(250, Math.floor(random() * ceiling));
}

export class Stream {
  /**
   * ``onMessage(obj)`` receives each JSON message; ``onState(state)`` "connecting" | "live" |
   * "retrying"; ``checkSession()`` is awaited after a drop (it redirects when the session ended).
   */
  constructor({ url, onMessage, onState, checkSession }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.checkSession = checkSession;
    this.failures = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "bye");
  }

  connect() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = Date.now();
      this.onState("live");
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return; // not JSON: not for us
      }
      this.onMessage(msg);
    };
    ws.onclose = async () => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (openedAt && Date.now() - openedAt >= STABLE_MS) this.failures = 0;
      const delay = backoffDelay(this.failures);
      this.failures++;
      this.onState("retrying", delay);
      try {
        await this.checkSession();
      } catch {
        // offline or server down: keep retrying
      }
      if (!this.stopped) this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}

// The live stream of room states (server-sent events), kept open across failures.
//
// A browser's EventSource cannot send the Authorization header, so each connection is opened
// with a fresh short-lived ticket. When a connection fails, the page closes it and opens a new
// one itself (new ticket, `last_event_id` = the last change it saw), so the service replays
// what changed meanwhile, or sends `reset` with everything when that is too old.

import { AuthError } from "./api.js";

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 2000;

export class LiveStream {
  // handlers: replace(rooms, at), update(roomState), connected(), lost(), denied(error)
  constructor(api, filter, handlers) {
    this.api = api;
    this.filter = filter;
    this.handlers = handlers;
    this.lastEventId = null;
    this.source = null;
    this.timer = null;
    this.stopped = false;
    this.failures = 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  async open() {
    if (this.stopped) return;
    let ticket;
    try {
      ticket = (await this.api.ticket()).ticket;
    } catch (error) {
      if (error instanceof AuthError) {
        this.stop();
        this.handlers.denied(error);
        return;
      }
      this.retry();
      return;
    }
    if (this.stopped) return;
    const params = { ...this.filter };
    if (this.lastEventId !== null) params.last_event_id = this.lastEventId;
    const source = new EventSource(this.api.streamUrl(ticket, params));
    this.source = source;
    const seen = (event) => {
      if (event.lastEventId) this.lastEventId = event.lastEventId;
    };
    const whole = (event) => {
      const data = JSON.parse(event.data);
      seen(event);
      this.failures = 0;
      this.handlers.replace(data.rooms || [], data.at);
    };
    source.addEventListener("open", () => {
      this.failures = 0;
      this.handlers.connected();
    });
    source.addEventListener("snapshot", whole);
    source.addEventListener("reset", whole);
    source.addEventListener("room", (event) => {
      seen(event);
      this.handlers.update(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      // EventSource would retry with the same, possibly expired, ticket: start over instead.
      source.close();
      this.source = null;
      this.handlers.lost();
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    this.failures += 1;
    this.handlers.lost();
    const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(this.failures - 1, 4));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), wait);
  }
}

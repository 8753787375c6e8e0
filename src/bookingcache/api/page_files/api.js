// The service's API as the page uses it: every call under the tenant's read token, sent in the
// Authorization header only (never in a URL).

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

const STORE_KEY = "bookingcache.page.credentials";

// The credentials live in sessionStorage: this tab only, gone when it closes.
export function savedCredentials() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (saved && typeof saved.tenant === "string" && typeof saved.token === "string") return saved;
  } catch (_) {
    /* nothing usable saved */
  }
  return null;
}

export function saveCredentials(tenant, token) {
  sessionStorage.setItem(STORE_KEY, JSON.stringify({ tenant, token }));
}

export function forgetCredentials() {
  sessionStorage.removeItem(STORE_KEY);
}

// A read token looks like "<tenant>.<random>": the tenant can be read off it.
export function tenantOfToken(token) {
  const dot = token.indexOf(".");
  return dot > 0 ? token.slice(0, dot) : "";
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) search.append(name, String(one));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export class Api {
  constructor(tenant, token) {
    this.tenant = tenant;
    this.token = token;
    this.base = `/v1/tenants/${encodeURIComponent(tenant)}`;
  }

  async call(method, path, { params, body } = {}) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.base + path + query(params), init);
    if (response.status === 401 || response.status === 403) {
      throw new AuthError("The token was not accepted for this tenant.");
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = answer && (answer.detail || answer.title);
      throw new ApiError(detail || `The service answered ${response.status}.`, response.status);
    }
    return answer;
  }

  buildings() {
    return this.call("GET", "/buildings");
  }

  mapRooms(building, floor) {
    return this.call("GET", "/map/rooms", { params: { building, floor } });
  }

  availability(rooms, start, end) {
    return this.call("POST", "/availability", {
      body: { rooms, start: new Date(start).toISOString(), end: new Date(end).toISOString() },
    });
  }

  roomAvailability(room, start, end) {
    return this.call("GET", `/rooms/${encodeURIComponent(room)}/availability`, {
      params: { start: new Date(start).toISOString(), end: new Date(end).toISOString() },
    });
  }

  freeRooms({ minutes, capacity, building, floor }) {
    return this.call("GET", "/rooms:free", { params: { minutes, capacity, building, floor } });
  }

  ticket() {
    return this.call("POST", "/stream/tickets");
  }

  streamUrl(ticket, params) {
    return `${this.base}/stream${query({ ticket, ...params })}`;
  }
}

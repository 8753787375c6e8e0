// What a room's state means on the page: its displayed status (free, busy, free soon, busy soon,
// tentative, out of office, unknown), the words that say it, and the times it shows.

export const SOON_MS = 15 * 60 * 1000;

// Every displayed status has a colour (page.css, .status-<key>) and words: colour is never the
// only cue.
export const STATUSES = [
  { key: "free", label: "Free" },
  { key: "busy-soon", label: "Busy soon" },
  { key: "busy", label: "Busy" },
  { key: "free-soon", label: "Free soon" },
  { key: "tentative", label: "Tentative" },
  { key: "oof", label: "Out of office" },
  { key: "unknown", label: "Unknown" },
];
const LABELS = Object.fromEntries(STATUSES.map((s) => [s.key, s.label]));

const OCCUPYING = new Set(["busy", "tentative", "oof"]);

export function occupies(status) {
  return OCCUPYING.has(status);
}

// The displayed status of a RoomState at `now` (ms since the epoch).
export function displayStatus(state, now) {
  if (!state || state.stale || !state.status || state.status === "unknown") return "unknown";
  const changeAt = state.next_change_at ? Date.parse(state.next_change_at) : NaN;
  const soon = Number.isFinite(changeAt) && changeAt - now <= SOON_MS;
  if (occupies(state.status)) {
    if (soon && state.next_status && !occupies(state.next_status)) return "free-soon";
    return state.status;
  }
  if (soon && occupies(state.next_status)) return "busy-soon";
  return "free";
}

export function statusLabel(key) {
  return LABELS[key] || LABELS.unknown;
}

export function formatTime(iso, zone) {
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (zone) options.timeZone = zone;
  try {
    return new Intl.DateTimeFormat(undefined, options).format(new Date(iso));
  } catch (_) {
    delete options.timeZone; // a zone this browser does not know: its own
    return new Intl.DateTimeFormat(undefined, options).format(new Date(iso));
  }
}

// "Free until 10:00", "Busy until 11:30", "Free rest of day", ...
export function untilText(state, key, zone) {
  if (key === "unknown") return state && state.stale ? "No recent data" : "Not known";
  const occupied = occupies(state.status);
  if (!state.next_change_at) return occupied ? "Taken rest of day" : "Free rest of day";
  const at = formatTime(state.next_change_at, zone);
  if (occupied) return `${statusLabel(state.status)} until ${at}`;
  return `Free until ${at}`;
}

// The current meeting's title (after the tenant's title policy), or what to say instead.
export function meetingText(state) {
  if (!state || !state.current) return "";
  const title = state.current.title;
  return title ? title : "Untitled meeting";
}

// The offset (ms) of `zone` from UTC at instant `ms`.
function zoneOffset(ms, zone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const asUtc = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"),
    get("second"));
  return asUtc - Math.floor(ms / 1000) * 1000;
}

// [start, end) in ms of the day that contains `now` in `zone` (the browser's own without one).
export function dayOf(now, zone) {
  if (!zone) {
    const start = new Date(now);
    start.setHours(0, 0, 0, 0);
    const end = new Date(start);
    end.setDate(end.getDate() + 1);
    return [start.getTime(), end.getTime()];
  }
  try {
    const local = new Date(now + zoneOffset(now, zone));
    const midnight = Date.UTC(local.getUTCFullYear(), local.getUTCMonth(), local.getUTCDate());
    const next = midnight + 24 * 3600 * 1000;
    // The offsets at the two midnights differ on a day that changes the clocks.
    const start = midnight - zoneOffset(midnight - zoneOffset(now, zone), zone);
    const end = next - zoneOffset(next - zoneOffset(now, zone), zone);
    return [start, end];
  } catch (_) {
    return dayOf(now, null);
  }
}

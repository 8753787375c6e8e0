// Drawing the rooms: a floor plan (SVG, from the rooms' GeoJSON geometry), tiles, each room's
// timeline of the day, the colour key and a room's details. Everything is built with DOM calls
// (no markup strings, no inline styles), so the page's strict policy holds.

import {
  STATUSES, dayOf, displayStatus, formatTime, meetingText, statusLabel, untilText,
} from "./status.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MINUTES = 24 * 60;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAll(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  setAll(node, attrs);
  node.append(...children);
  return node;
}

function setAll(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

// --- what a room says ---------------------------------------------------------------------------

export function describe(room, now) {
  const key = displayStatus(room.state, now);
  const until = room.state ? untilText(room.state, key, room.zone) : "Not known";
  const meeting = key === "unknown" ? "" : meetingText(room.state);
  const seats = Number.isInteger(room.capacity) ? `${room.capacity} seats` : "";
  const parts = [statusLabel(key), until !== statusLabel(key) ? until : "", meeting]
    .filter(Boolean);
  const label = `${room.name}${seats ? `, ${seats}` : ""}: ${parts.join(", ")}`;
  return { key, until, meeting, seats, label };
}

// --- the colour key -----------------------------------------------------------------------------

export function renderLegend(list) {
  list.replaceChildren(
    ...STATUSES.map((s) =>
      el("li", {}, el("span", { class: `swatch status-${s.key}`, "aria-hidden": "true" }), s.label),
    ),
  );
}

// --- the timeline of a room's day ----------------------------------------------------------------

function segmentsText(room, start, end) {
  const parts = [];
  for (const segment of room.segments || []) {
    const from = Math.max(Date.parse(segment.start), start);
    const to = Math.min(Date.parse(segment.end), end);
    if (to <= from) continue;
    const what = statusLabel(segment.status === "workingElsewhere" ? "free" : segment.status);
    parts.push(`${what} ${formatTime(from, room.zone)} to ${formatTime(to, room.zone)}`);
  }
  return parts.length ? `Today: ${parts.join("; ")}` : "Today: nothing booked";
}

export function timeline(room, now, { large = false } = {}) {
  const [start, end] = dayOf(now, room.zone);
  const span = end - start;
  const x = (ms) => (((Math.min(Math.max(ms, start), end) - start) / span) * DAY_MINUTES).toFixed(1);
  const bar = svg("svg", {
    class: large ? "timeline large" : "timeline",
    viewBox: `0 0 ${DAY_MINUTES} 20`,
    preserveAspectRatio: "none",
    "aria-hidden": "true",
    focusable: "false",
  });
  bar.append(svg("rect", { class: "timeline-day", x: 0, y: 0, width: DAY_MINUTES, height: 20 }));
  for (const segment of room.segments || []) {
    const from = Date.parse(segment.start);
    const to = Date.parse(segment.end);
    if (to <= start || from >= end || segment.status === "workingElsewhere") continue;
    const left = Number(x(from));
    bar.append(svg("rect", {
      class: `seg status-${segment.status}`, x: left, y: 2, height: 16,
      width: Math.max(Number(x(to)) - left, 2),
    }));
  }
  for (const hour of [6, 12, 18]) {
    const at = (hour / 24) * DAY_MINUTES;
    bar.append(svg("line", {
      class: "timeline-tick", x1: at, x2: at, y1: 0, y2: 20, "vector-effect": "non-scaling-stroke",
    }));
  }
  if (now >= start && now < end) {
    bar.append(svg("line", {
      class: "timeline-now", x1: x(now), x2: x(now), y1: 0, y2: 20,
      "vector-effect": "non-scaling-stroke",
    }));
  }
  const hours = el("div", { class: "timeline-hours", "aria-hidden": "true" },
    ...["00", "06", "12", "18", "24"].map((h) => el("span", { text: h })));
  return el("div", { class: "timeline-box", role: "img", "aria-label": segmentsText(room, start, end) },
    bar, hours);
}

// --- tiles --------------------------------------------------------------------------------------

export function renderTiles(list, rooms, now, { matches, onOpen }) {
  list.replaceChildren(...rooms.map((room) => tile(room, now, matches, onOpen)));
}

export function tile(room, now, matches, onOpen) {
  const said = describe(room, now);
  const dimmed = matches && !matches.has(room.id);
  const button = el("button", {
    type: "button",
    class: `tile status-${said.key}${dimmed ? " dimmed" : ""}`,
    "data-room": room.id,
    "data-status": said.key,
    "aria-label": said.label + (dimmed ? " (does not match the search)" : ""),
  },
  el("span", { class: "tile-name", text: room.name }),
  el("span", { class: "tile-status" }, el("span", { class: "badge", text: statusLabel(said.key) })),
  el("span", { class: "tile-until", text: said.until }),
  said.meeting ? el("span", { class: "tile-meeting", text: said.meeting }) : null,
  said.seats ? el("span", { class: "tile-seats", text: said.seats }) : null,
  timeline(room, now));
  button.addEventListener("click", () => onOpen(room.id, button));
  return el("li", { "data-room": room.id }, button);
}

// --- the floor plan -----------------------------------------------------------------------------

function rings(geometry) {
  if (!geometry) return [];
  if (geometry.type === "Polygon") return [geometry.coordinates[0]];
  if (geometry.type === "MultiPolygon") return geometry.coordinates.map((p) => p[0]);
  return [];
}

export function hasPlan(rooms) {
  return rooms.some((room) => rings(room.geometry).length > 0);
}

// The plan's frame: map coordinates to SVG units (y grows downwards in SVG, upwards in a map).
function frame(rooms) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const room of rooms) {
    for (const ring of rings(room.geometry)) {
      for (const [px, py] of ring) {
        minX = Math.min(minX, px);
        maxX = Math.max(maxX, px);
        minY = Math.min(minY, py);
        maxY = Math.max(maxY, py);
      }
    }
  }
  // Longitude and latitude (GeoJSON's own coordinates): a degree of longitude is shorter than
  // one of latitude away from the equator, by the cosine of the latitude.
  const geographic = minX >= -180 && maxX <= 180 && minY >= -90 && maxY <= 90
    && maxX - minX < 1 && maxY - minY < 1;
  const squeeze = geographic ? Math.cos((((minY + maxY) / 2) * Math.PI) / 180) : 1;
  const width = 1000;
  const scale = width / Math.max((maxX - minX) * squeeze, 1e-12);
  const height = Math.max((maxY - minY) * scale, 100);
  return {
    width,
    height,
    point: ([px, py]) => [(px - minX) * squeeze * scale, (maxY - py) * scale],
  };
}

export function renderPlan(container, rooms, now, { matches, onOpen, title }) {
  const placed = rooms.filter((room) => rings(room.geometry).length > 0);
  const f = frame(placed);
  const pad = 10;
  const plan = svg("svg", {
    viewBox: `${-pad} ${-pad} ${f.width + 2 * pad} ${f.height + 2 * pad}`,
    role: "group",
    "aria-label": title,
    class: "plan-svg",
  });
  for (const room of placed) plan.append(planRoom(room, now, f, matches, onOpen));
  container.replaceChildren(plan);
}

export function planRoom(room, now, f, matches, onOpen) {
  const said = describe(room, now);
  const dimmed = matches && !matches.has(room.id);
  const group = svg("g", {
    class: `room status-${said.key}${dimmed ? " dimmed" : ""}`,
    tabindex: 0,
    role: "button",
    "data-room": room.id,
    "data-status": said.key,
    "aria-label": said.label + (dimmed ? " (does not match the search)" : ""),
  });
  let box = null;
  for (const ring of rings(room.geometry)) {
    const points = ring.map(f.point);
    group.append(svg("polygon", { points: points.map((p) => p.map((n) => n.toFixed(1)).join(",")).join(" ") }));
    for (const [px, py] of points) {
      box = box || { x0: px, y0: py, x1: px, y1: py };
      box = { x0: Math.min(box.x0, px), y0: Math.min(box.y0, py), x1: Math.max(box.x1, px), y1: Math.max(box.y1, py) };
    }
  }
  const cx = (box.x0 + box.x1) / 2;
  const cy = (box.y0 + box.y1) / 2;
  const width = box.x1 - box.x0;
  // On its building's plan, a room's name goes without the building's ("1.01 Fjord").
  const prefix = room.building ? `${room.building} ` : "";
  const name = prefix && room.name.startsWith(prefix) && room.name.length > prefix.length
    ? room.name.slice(prefix.length) : room.name;
  // Big enough to read, small enough for the name to fit (bold letters: about 0.65 em wide).
  const size = Math.max(
    Math.min(width / (0.65 * Math.max(name.length, 10)), (box.y1 - box.y0) / 5.5, 22), 8);
  const text = (y, cls, words) =>
    svg("text", { x: cx.toFixed(1), y: y.toFixed(1), class: cls, "font-size": size.toFixed(1), "aria-hidden": "true" }, words);
  const short = (words, n) => (words.length > n ? `${words.slice(0, n - 1)}…` : words);
  const chars = Math.max(Math.floor(width / (size * 0.65)), 6);
  const lines = [
    ["room-name", short(name, chars)],
    ["room-status", statusLabel(said.key)],
    ["room-until", short(said.until, chars)],
  ];
  if (said.meeting) lines.push(["room-meeting", short(said.meeting, chars)]);
  const top = cy - ((lines.length - 1) * size * 1.15) / 2 - size * 0.5;
  lines.forEach(([cls, words], i) => group.append(text(top + i * size * 1.15, cls, words)));
  group.append(miniTimeline(room, now, box, size));
  const open = () => onOpen(room.id, group);
  group.addEventListener("click", open);
  group.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open();
    }
  });
  return group;
}

// The room's day as a thin bar along the bottom of its shape on the plan.
function miniTimeline(room, now, box, size) {
  const [start, end] = dayOf(now, room.zone);
  const left = box.x0 + (box.x1 - box.x0) * 0.08;
  const width = (box.x1 - box.x0) * 0.84;
  const height = Math.max(size * 0.45, 4);
  const y = box.y1 - height - size * 0.5;
  const x = (ms) => left + ((Math.min(Math.max(ms, start), end) - start) / (end - start)) * width;
  const bar = svg("g", { class: "mini-timeline", "aria-hidden": "true" },
    svg("rect", { class: "timeline-day", x: left.toFixed(1), y: y.toFixed(1), width: width.toFixed(1), height: height.toFixed(1) }));
  for (const segment of room.segments || []) {
    const from = Date.parse(segment.start);
    const to = Date.parse(segment.end);
    if (to <= start || from >= end || segment.status === "workingElsewhere") continue;
    bar.append(svg("rect", {
      class: `seg status-${segment.status}`, x: x(from).toFixed(1), y: y.toFixed(1), height: height.toFixed(1),
      width: Math.max(x(to) - x(from), 1.5).toFixed(1),
    }));
  }
  if (now >= start && now < end) {
    bar.append(svg("rect", { class: "timeline-now-mark", x: (x(now) - 1).toFixed(1), y: (y - 2).toFixed(1), width: 2, height: (height + 4).toFixed(1) }));
  }
  return bar;
}

export function planFrame(rooms) {
  return frame(rooms.filter((room) => rings(room.geometry).length > 0));
}

// --- a room's details ---------------------------------------------------------------------------

function meetingLine(label, meeting, zone) {
  if (!meeting) return null;
  const when = `${formatTime(meeting.start, zone)} to ${formatTime(meeting.end, zone)}`;
  return el("p", {}, el("strong", { text: `${label}: ` }), `${meeting.title || "Untitled meeting"}, ${when}`);
}

export function renderDetails(heading, body, room, now) {
  const said = describe(room, now);
  heading.textContent = room.name;
  const parts = [
    el("p", { class: `badge status-${said.key}`, text: statusLabel(said.key) }),
    el("p", { text: said.until }),
    said.seats ? el("p", { text: said.seats }) : null,
    room.state && said.key !== "unknown" ? meetingLine("Now", room.state.current, room.zone) : null,
    room.state && said.key !== "unknown" ? meetingLine("Next", room.state.next, room.zone) : null,
    timeline(room, now, { large: true }),
  ];
  body.replaceChildren(...parts.filter(Boolean));
}

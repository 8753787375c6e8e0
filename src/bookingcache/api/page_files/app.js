// The live availability page: sign in with a read token, pick a building and a floor, watch its
// rooms change as the stream reports them.

import {
  Api, AuthError, forgetCredentials, saveCredentials, savedCredentials, tenantOfToken,
} from "./api.js";
import {
  el, hasPlan, planFrame, planRoom, renderDetails, renderLegend, renderPlan,
  renderTiles, tile,
} from "./render.js";
import { formatTime } from "./status.js";
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const TICK_MS = 15 * 1000;
const DAY_MS = 24 * 3600 * 1000;
const NO_BUILDING = "-";

const page = {
  api: null,
  buildings: [],
  building: undefined, // a building id, null for rooms without one, undefined: none chosen
  floor: undefined,
  rooms: new Map(), // room id -> {id, name, building, floor, capacity, geometry, zone, state, segments}
  order: [],
  stream: null,
  view: null, // "plan" | "tiles"
  matches: null, // Set of room ids the search found, or null
  filterQuery: null,
  open: null, // {id, opener}
  timers: new Map(),
  generation: 0, // bumps with each floor loaded: answers for an older floor are dropped
};

// --- small helpers ------------------------------------------------------------------------------

function later(key, ms, work) {
  clearTimeout(page.timers.get(key));
  page.timers.set(key, setTimeout(() => {
    page.timers.delete(key);
    work();
  }, ms));
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function floorTitle() {
  const building = page.building === null ? "Rooms without a building" : `Building ${page.building}`;
  return page.floor === null || page.floor === undefined ? building : `${building}, floor ${page.floor}`;
}

// --- signing in and out -------------------------------------------------------------------------

function showSignIn(message = "") {
  show("sign-in", true);
  show("places", false);
  show("floor", false);
  show("details", false);
  show("sign-out", false);
  show("connection", false);
  $("sign-in-error").textContent = message;
  $("sign-in-token").value = "";
  $("sign-in-token").focus();
}

function signOut(message = "") {
  if (page.stream) page.stream.stop();
  page.stream = null;
  page.api = null;
  page.rooms = new Map();
  forgetCredentials();
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const token = $("sign-in-token").value.trim();
  const tenant = $("sign-in-tenant").value.trim() || tenantOfToken(token);
  if (!token || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(tenant)) {
    $("sign-in-error").textContent = token
      ? "Enter the tenant: it cannot be read from this token."
      : "Enter the read token.";
    return;
  }
  const api = new Api(tenant, token);
  try {
    page.buildings = (await api.buildings()).buildings;
  } catch (error) {
    $("sign-in-error").textContent = error instanceof AuthError
      ? "This token was not accepted for this tenant."
      : `The service could not be reached: ${error.message}`;
    return;
  }
  saveCredentials(tenant, token);
  $("sign-in-token").value = "";
  start(api, page.buildings);
}

async function start(api, buildings) {
  page.api = api;
  show("sign-in", false);
  show("sign-out", true);
  show("places", true);
  try {
    page.buildings = buildings || (await api.buildings()).buildings;
  } catch (error) {
    failed(error, "buildings");
    return;
  }
  renderBuildings();
  route();
}

function failed(error, what) {
  if (error instanceof AuthError) {
    signOut("The token is no longer accepted. Sign in again.");
    return;
  }
  show("floor", true);
  $("floor-error").textContent = `Could not load the ${what}: ${error.message}`;
}

// --- buildings and floors -----------------------------------------------------------------------

function hashOf(building, floor) {
  const b = building === null ? NO_BUILDING : encodeURIComponent(building);
  return floor === undefined ? `#/${b}` : `#/${b}/${encodeURIComponent(floor === null ? NO_BUILDING : floor)}`;
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const decode = (part) => (part === NO_BUILDING ? null : decodeURIComponent(part));
  return { building: parts.length > 0 ? decode(parts[0]) : undefined,
    floor: parts.length > 1 ? decode(parts[1]) : undefined };
}

function navButton(label, current, href) {
  const link = el("a", { href, class: "nav-item", text: label });
  if (current) link.setAttribute("aria-current", "page");
  return link;
}

function renderBuildings() {
  $("buildings").replaceChildren(el("ul", {}, ...page.buildings.map((b) =>
    el("li", {}, navButton(b.id === null ? "No building" : b.id, b.id === page.building,
      hashOf(b.id))))));
}

function renderFloors(building) {
  const floors = building ? building.floors : [];
  $("floors").replaceChildren(el("ul", {}, ...floors.map((f) =>
    el("li", {}, navButton(f.id === null ? "No floor" : `Floor ${f.id}`, f.id === page.floor,
      hashOf(building.id, f.id))))));
}

function route() {
  if (!page.api) return;
  const wanted = parseHash();
  const building = page.buildings.find((b) => b.id === wanted.building) || page.buildings[0];
  if (!building) {
    show("floor", true);
    $("floor-error").textContent = "This tenant has no rooms yet.";
    return;
  }
  const floor = building.floors.find((f) => f.id === wanted.floor) || building.floors[0];
  if (building.id !== wanted.building || !floor || floor.id !== wanted.floor) {
    history.replaceState(null, "", hashOf(building.id, floor ? floor.id : undefined));
  }
  const changed = building.id !== page.building || (floor && floor.id) !== page.floor;
  page.building = building.id;
  page.floor = floor ? floor.id : null;
  renderBuildings();
  renderFloors(building);
  if (changed || page.rooms.size === 0) loadFloor();
}

// Whether the floor follows the stream right now (data-live on its section).
function live(on) {
  $("floor").setAttribute("data-live", String(on));
}

// --- one floor ----------------------------------------------------------------------------------

async function loadFloor() {
  const generation = ++page.generation;
  if (page.stream) page.stream.stop();
  page.stream = null;
  closeDetails(false);
  clearFilter(false);
  show("floor", true);
  $("floor-error").textContent = "";
  $("rooms-heading").textContent = floorTitle();
  // Busy until the rooms' states are in (the availability answer or the stream's snapshot).
  $("floor").setAttribute("aria-busy", "true");
  live(false);
  const api = page.api;
  let listed;
  try {
    listed = (await api.mapRooms(page.building ?? undefined, page.floor ?? undefined)).rooms
      .filter((r) => r.building === page.building && r.floor === page.floor);
  } catch (error) {
    if (generation === page.generation) failed(error, "rooms");
    return;
  }
  if (generation !== page.generation) return;
  page.rooms = new Map(listed.map((r) => [r.id, { ...r, zone: null, state: null, segments: [] }]));
  page.order = listed.map((r) => r.id);
  // A plan when there is geometry, except on a narrow screen, where tiles read better.
  page.view = hasPlan(listed) && window.matchMedia("(min-width: 40rem)").matches ? "plan" : "tiles";
  $("view-plan").disabled = !hasPlan(listed);
  $(`view-${page.view}`).checked = true;
  draw();
  await refreshTimelines(generation);
  if (generation !== page.generation) return;
  const filter = {};
  if (page.building !== null) filter.building = page.building;
  if (page.floor !== null) filter.floor = page.floor;
  page.stream = new LiveStream(api, filter, {
    replace: (states) => {
      if (generation !== page.generation) return;
      const fresh = new Map(states.map((s) => [s.room, s]));
      for (const room of page.rooms.values()) room.state = fresh.get(room.id) || null;
      $("floor").setAttribute("aria-busy", "false");
      live(true);
      draw();
      later("timelines", 300, () => refreshTimelines(generation));
      if (page.filterQuery) later("filter", 300, () => runFilter(page.filterQuery));
    },
    update: (state) => {
      if (generation !== page.generation) return;
      const room = page.rooms.get(state.room);
      if (!room) return;
      room.state = state;
      redrawRoom(room);
      later(`timeline:${room.id}`, 250, () => refreshTimeline(room, generation));
      if (page.filterQuery) later("filter", 300, () => runFilter(page.filterQuery));
    },
    connected: () => {
      show("connection", false);
      // A resumed stream is current at once; a new one once its snapshot is in.
      if (page.stream && page.stream.lastEventId !== null) live(true);
    },
    lost: () => {
      show("connection", true);
      live(false);
    },
    denied: () => signOut("The token is no longer accepted. Sign in again."),
  });
  page.stream.start();
}

// Before the stream's first snapshot, a room shows what the availability answer says.
function stateOf(answer) {
  return {
    room: answer.room_id, status: answer.status, stale: answer.stale,
    next_change_at: answer.next_change_at, next_status: answer.next_status,
    current: null, next: null,
  };
}

async function refreshTimelines(generation) {
  const ids = [...page.rooms.keys()];
  if (!ids.length) return;
  const now = Date.now();
  try {
    const answer = await page.api.availability(ids, now - DAY_MS - 3600e3, now + DAY_MS + 3600e3);
    if (generation !== page.generation) return;
    for (const one of answer.rooms) {
      const room = page.rooms.get(one.room_id);
      if (!room) continue;
      room.zone = one.time_zone;
      room.segments = one.segments;
      if (!room.state) room.state = stateOf(one);
    }
    $("floor").setAttribute("aria-busy", "false");
    draw();
  } catch (error) {
    if (generation === page.generation) failed(error, "timelines");
  }
}

async function refreshTimeline(room, generation) {
  const now = Date.now();
  try {
    const one = await page.api.roomAvailability(room.id, now - DAY_MS - 3600e3, now + DAY_MS + 3600e3);
    if (generation !== page.generation) return;
    room.zone = one.time_zone;
    room.segments = one.segments;
    redrawRoom(room);
  } catch (error) {
    if (generation === page.generation && error instanceof AuthError) failed(error, "timeline");
  }
}

function roomsInOrder() {
  return page.order.map((id) => page.rooms.get(id)).filter(Boolean);
}

// The room that has the keyboard focus, to give it back after drawing anew.
function focusedRoom() {
  const active = document.activeElement;
  if (!active || !active.closest) return null;
  const holder = active.closest("#plan g[data-room], #tiles button[data-room]");
  return holder ? holder.getAttribute("data-room") : null;
}

function refocus(id) {
  if (id === null) return;
  const target = document.querySelector(
    `#plan g[data-room="${CSS.escape(id)}"], #tiles button[data-room="${CSS.escape(id)}"]`);
  if (target) target.focus();
}

function draw() {
  showClock();
  const focused = focusedRoom();
  const now = Date.now();
  const rooms = roomsInOrder();
  const options = { matches: page.matches, onOpen: openDetails, title: `Floor plan: ${floorTitle()}` };
  const plan = page.view === "plan";
  show("plan", plan);
  if (plan) renderPlan($("plan"), rooms, now, options);
  else $("plan").replaceChildren();
  // Rooms without geometry are tiles under the plan; in the tiles view, every room is.
  renderTiles($("tiles"), plan ? rooms.filter((r) => !hasPlan([r])) : rooms, now, options);
  if (page.open) {
    const room = page.rooms.get(page.open.id);
    if (room) renderDetails($("details-heading"), $("details-body"), room, now);
  }
  refocus(focused);
}

// One room changed: replace its drawing only, keeping the keyboard focus where it was.
function redrawRoom(room) {
  const now = Date.now();
  const hadFocus = focusedRoom() === room.id;
  let replacement = null;
  const drawn = document.querySelector(`#plan g[data-room="${CSS.escape(room.id)}"]`);
  if (drawn) {
    replacement = planRoom(room, now, planFrame(roomsInOrder()), page.matches, openDetails);
    drawn.replaceWith(replacement);
  }
  const item = document.querySelector(`#tiles li[data-room="${CSS.escape(room.id)}"]`);
  if (item) {
    const fresh = tile(room, now, page.matches, openDetails);
    item.replaceWith(fresh);
    replacement = fresh.querySelector("button");
  }
  if (hadFocus && replacement) replacement.focus();
  if (page.open && page.open.id === room.id) {
    renderDetails($("details-heading"), $("details-body"), room, now);
  }
}

// --- details ------------------------------------------------------------------------------------

function openDetails(id, opener) {
  const room = page.rooms.get(id);
  if (!room) return;
  page.open = { id, opener: opener.getAttribute("data-room") };
  renderDetails($("details-heading"), $("details-body"), room, Date.now());
  show("details", true);
  $("details-heading").focus();
}

function closeDetails(giveBack = true) {
  const open = page.open;
  page.open = null;
  show("details", false);
  if (giveBack && open) {
    refocus(open.opener);
  }
}

// --- finding a free room ------------------------------------------------------------------------

function readFilter() {
  const minutesText = $("filter-minutes").value.trim();
  const capacityText = $("filter-capacity").value.trim();
  const minutes = Number(minutesText || "30");
  const capacity = capacityText === "" ? undefined : Number(capacityText);
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    return { error: "Minutes must be a whole number from 1 to 1440." };
  }
  if (capacity !== undefined && (!Number.isInteger(capacity) || capacity < 0)) {
    return { error: "Seats must be a whole number, 0 or more." };
  }
  return { minutes, capacity };
}

async function runFilter(query) {
  const generation = page.generation;
  let answer;
  try {
    answer = await page.api.freeRooms({
      minutes: query.minutes, capacity: query.capacity,
      building: page.building ?? undefined, floor: page.floor ?? undefined,
    });
  } catch (error) {
    if (error instanceof AuthError) failed(error, "free rooms");
    else $("filter-result").replaceChildren(el("p", { class: "error", text: error.message }));
    return;
  }
  if (generation !== page.generation || page.filterQuery !== query) return;
  const found = answer.rooms.filter((r) => page.rooms.has(r.id));
  page.matches = new Set(found.map((r) => r.id));
  const seats = query.capacity !== undefined ? ` with ${query.capacity} or more seats` : "";
  const count = found.length === 1 ? "1 room is" : `${found.length} rooms are`;
  const list = el("ol", { class: "matches", "aria-label": "Free rooms" }, ...found.map((r) => {
    const room = page.rooms.get(r.id);
    const until = r.free_until ? `free until ${formatTime(r.free_until, room.zone)}` : "free rest of day";
    const seatsText = Number.isInteger(r.capacity) ? `, ${r.capacity} seats` : "";
    const button = el("button", { type: "button", "data-room": r.id, text: `${room.name}${seatsText}, ${until}` });
    button.addEventListener("click", () => openDetails(r.id, button));
    return el("li", {}, button);
  }));
  $("filter-result").replaceChildren(
    el("p", { text: `${count} free now for at least ${query.minutes} minutes${seats}.` }), list);
  show("filter-clear", true);
  draw();
}

function submitFilter(event) {
  event.preventDefault();
  const query = readFilter();
  if (query.error) {
    $("filter-result").replaceChildren(el("p", { class: "error", text: query.error }));
    return;
  }
  page.filterQuery = query;
  runFilter(query);
}

function clearFilter(redraw = true) {
  page.filterQuery = null;
  page.matches = null;
  $("filter-result").replaceChildren();
  show("filter-clear", false);
  if (redraw) draw();
}

// --- the lobby display and the clock ------------------------------------------------------------

function setKiosk(on) {
  document.body.classList.toggle("kiosk", on);
  $("kiosk-toggle").setAttribute("aria-pressed", String(on));
  const url = new URL(location.href);
  if (on) url.searchParams.set("display", "kiosk");
  else url.searchParams.delete("display");
  history.replaceState(null, "", url);
}

function toggleKiosk() {
  const on = !document.body.classList.contains("kiosk");
  setKiosk(on);
  if (on && document.documentElement.requestFullscreen) {
    document.documentElement.requestFullscreen().catch(() => {});
  } else if (!on && document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  }
}

// The floor's own time, as the rooms show theirs: 24-hour, in the rooms' zone once one is known
// (redrawn with the rooms, so it turns to the floor's zone as soon as their timelines arrive).
function showClock() {
  let zone = null;
  for (const room of page.rooms.values()) {
    if (room.zone) {
      zone = room.zone;
      break;
    }
  }
  $("clock").textContent = formatTime(new Date().toISOString(), zone);
}

function tick() {
  // "Free soon" and "busy soon" come near with time alone, and the timelines' "now" moves.
  if (page.rooms.size) draw();
  else showClock();
}

// --- start --------------------------------------------------------------------------------------

function init() {
  renderLegend($("legend"));
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("filter").addEventListener("submit", submitFilter);
  $("filter-clear").addEventListener("click", () => clearFilter());
  $("details-close").addEventListener("click", () => closeDetails());
  $("kiosk-toggle").addEventListener("click", toggleKiosk);
  for (const radio of document.querySelectorAll('input[name="view"]')) {
    radio.addEventListener("change", () => {
      page.view = radio.value;
      draw();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && page.open) closeDetails();
  });
  window.addEventListener("hashchange", route);
  setKiosk(new URLSearchParams(location.search).get("display") === "kiosk");
  tick();
  setInterval(tick, TICK_MS);
  const saved = savedCredentials();
  if (saved) start(new Api(saved.tenant, saved.token));
  else showSignIn();
}

init();

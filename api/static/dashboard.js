// Switchyard operator dashboard: plain JavaScript against the public API, no build step.
// The token lives in sessionStorage (this tab only). Every value from the API is written
// with textContent, never parsed as HTML.
"use strict";

(() => {
  const API = document.body.dataset.api;
  const TOKEN_KEY = "switchyard.token";
  const SUBPROTOCOL = "switchyard.events.v1";
  const FEED_MAX = 200;
  const FEED_TAIL = 50; // the newest events shown on load, before live ones arrive
  const REFRESH = { providers: 10000, active: 5000, analytics: 30000 };
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let socket = null;
  let lastEventId = null; // resume point: the socket reconnects with ?since=
  let reconnectDelay = 1000;
  let timers = [];
  let activeRows = [];
  const lastEventByWorkflow = new Map();
  const pending = new Map(); // debounced refreshes

  class Unauthorized extends Error {}

  async function api(path) {
    const response = await fetch(API + path, { headers: { Authorization: "Bearer " + token } });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      throw new Unauthorized((body.error && body.error.message) || response.statusText);
    }
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return (await response.json()).data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  const money = (value) => (value < 1 ? value.toFixed(4) : value.toFixed(2));
  const percent = (value) => (value === null || value === undefined ? "–" : value.toFixed(1) + "%");

  // ---- sign in / out -------------------------------------------------------------------

  function showBoard(visible) {
    $("login").hidden = visible;
    $("board").hidden = !visible;
    $("sign-out").hidden = !visible;
  }

  async function signIn(candidate) {
    token = candidate;
    try {
      await api("/events?limit=1"); // checks the token and the read permission
    } catch (error) {
      token = null;
      $("login-error").textContent =
        error instanceof Unauthorized ? "Token refused: " + error.message : String(error.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("login-error").textContent = "";
    showBoard(true);
    start();
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    stop();
    showBoard(false);
    $("login-error").textContent = reason || "";
  }

  // ---- panels --------------------------------------------------------------------------

  async function loadProviders() {
    const data = await api("/providers");
    const byService = new Map();
    for (const node of data.providers) {
      if (!byService.has(node.serviceName)) byService.set(node.serviceName, []);
      byService.get(node.serviceName).push(node);
    }
    const blocks = [];
    for (const [service, nodes] of byService) {
      const rows = nodes.map((node) => {
        const score = node.health.healthScore;
        const bar = el("span", { class: "health" + (score < 50 ? " low" : score < 80 ? " mid" : "") },
          el("span"));
        bar.firstChild.style.width = Math.max(0, Math.min(100, score)) + "%";
        const risk = node.prediction.failureProbability;
        return el("tr", { "data-node-id": node.nodeId },
          el("td", {}, el("div", { text: node.nodeId }),
            el("div", { class: "muted", text: node.providerName + " · " + node.region })),
          el("td", {}, bar, document.createTextNode(score.toFixed(1))),
          el("td", {}, el("span", { class: "badge " + node.breaker.state, text: node.breaker.state }),
            node.breaker.forced ? el("span", { class: "muted", text: " forced" }) : null),
          el("td", { class: "num", text: money(node.catalog.costPerRequest) }),
          el("td", { class: "num" + (risk >= node.prediction.threshold ? " risk" : ""),
            text: (risk * 100).toFixed(0) + "%" }));
      });
      blocks.push(el("div", { class: "service" }, el("h3", { text: service }),
        el("table", {},
          el("thead", {}, el("tr", {}, el("th", { text: "Node" }), el("th", { text: "Health" }),
            el("th", { text: "Breaker" }), el("th", { text: "Cost / req" }),
            el("th", { text: "Failure risk", title: "predicted SLO breach probability" }))),
          el("tbody", {}, ...rows))));
    }
    $("services").replaceChildren(...blocks);
  }

  async function loadActive() {
    const data = await api("/active-coordinations");
    const now = Date.now();
    activeRows = data.coordinations.map((item) => ({
      item,
      startedMs: now - item.ageSeconds * 1000,
    }));
    renderActive();
  }

  function renderActive() {
    const now = Date.now();
    const rows = activeRows.map(({ item, startedMs }) => {
      const last = lastEventByWorkflow.get(item.workflowId);
      return el("tr", { "data-workflow-id": item.workflowId, "data-kind": item.kind },
        el("td", {}, el("span", { class: "badge " + item.kind, text: item.kind })),
        el("td", { text: item.serviceName }),
        el("td", { class: "phase", text: item.phase }),
        el("td", { class: "num age", text: age((now - startedMs) / 1000) }),
        el("td", { class: "muted", text: last || "" }),
        el("td", {}, el("a", { href: item.temporalUiUrl, target: "_blank", rel: "noopener noreferrer",
          text: item.workflowId })));
    });
    $("active-table").tBodies[0].replaceChildren(...rows);
    $("active-empty").hidden = rows.length > 0;
    $("active-count").textContent = String(rows.length);
  }

  async function loadIncidents() {
    const data = await api("/incidents");
    const now = Date.now();
    const rows = data.incidents.slice(0, 20).map((incident) => {
      const opened = (now - Date.parse(incident.openedAt)) / 1000;
      return el("tr", { "data-incident-id": incident.incidentId, "data-open": String(incident.open) },
        el("td", {}, el("span", { class: "badge " + (incident.open ? "incident" : "ended"),
          text: incident.incidentId })),
        el("td", { class: "phase", text: incident.phase }),
        el("td", { text: incident.services.join(", ") }),
        el("td", { class: "muted", text: incident.blastRadius.join(", ") }),
        el("td", { class: "num", text: String(incident.members) }),
        el("td", { class: "num", text: incident.revenueAtRisk.toLocaleString() }),
        el("td", { text: incident.severity }),
        el("td", { class: "num", text: age(opened) + " ago" }));
    });
    $("incident-table").tBodies[0].replaceChildren(...rows);
    $("incident-empty").hidden = rows.length > 0;
    $("incident-count").textContent = String(data.incidents.filter((i) => i.open).length);
  }

  function tickAges() {
    const now = Date.now();
    const rows = $("active-table").tBodies[0].rows;
    activeRows.forEach(({ startedMs }, index) => {
      const cell = rows[index] && rows[index].querySelector(".age");
      if (cell) cell.textContent = age((now - startedMs) / 1000);
    });
  }

  async function loadAnalytics() {
    const [totals, series] = await Promise.all([
      api("/coordination-analytics?timeframe=1h"),
      api("/coordination-analytics/series?timeframe=1h&buckets=30"),
    ]);
    const figures = [
      ["Coordinations", String(totals.totalCoordinations)],
      ["Success rate", totals.totalCoordinations
        ? percent((100 * totals.successfulCoordinations) / totals.totalCoordinations) : "–"],
      ["Avg coordination", totals.averageCoordinationTime.toFixed(1) + " ms"],
      ["Cost savings", money(totals.totalCostSavings)],
      ["Backend integration", percent(totals.backendIntegrationRate)],
      ["Emergencies", String(totals.emergencyActivations)],
    ];
    // Before vs after: cost against the primary nodes, resolution against what was declared.
    const compared = totals.beforeVsAfter;
    if (compared) {
      const signed = (v) => (v === null ? "–" : (v > 0 ? "−" : "+") + percent(Math.abs(v)));
      figures.push(
        ["Cost vs primary", signed(compared.costReduction)],
        ["Resolution vs declared", signed(compared.resolutionTimeImprovement)],
      );
    }
    $("totals").replaceChildren(...figures.map(([label, value]) =>
      el("div", {}, el("dt", { text: label }), el("dd", { text: value }))));
    drawChart($("chart-success"), series.points.map((p) => p.successRate), 100, percent);
    drawChart($("chart-cost"), series.points.map((p) => p.cost), null, money);
  }

  // A sparkline: one polyline per run of known values, the top value written in a corner.
  function drawChart(target, values, fixedTop, format) {
    const width = 300, height = 90, pad = 12;
    const known = values.filter((v) => v !== null && v !== undefined);
    const top = fixedTop || Math.max(...known, 0) || 1;
    const x = (i) => (values.length > 1 ? (i * width) / (values.length - 1) : width / 2);
    const y = (v) => height - pad - ((height - 2 * pad) * v) / top;
    const parts = [svg("line", { x1: 0, x2: width, y1: y(0), y2: y(0) })];
    let run = [];
    const flush = () => {
      if (run.length > 1) parts.push(svg("polyline", { points: run.join(" ") }));
      if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        parts.push(svg("circle", { class: "dot", cx, cy, r: 2 }));
      }
      run = [];
    };
    values.forEach((v, i) => {
      if (v === null || v === undefined) flush();
      else run.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
    });
    flush();
    target.replaceChildren(...parts);
    const label = target.parentElement.querySelector(".chart-max");
    label.textContent = known.length ? "max " + format(Math.max(...known)) : "no data yet";
  }

  // ---- live events ---------------------------------------------------------------------

  function summary(event) {
    const skip = new Set(["id", "eventType", "timestamp", "serviceName", "workflowId"]);
    return Object.entries(event)
      .filter(([key, value]) => !skip.has(key) && value !== null && typeof value !== "object")
      .slice(0, 6)
      .map(([key, value]) => key + "=" + value)
      .join("  ");
  }

  // `live`: it just happened (highlighted, and the panels it changes refresh); otherwise one
  // of the newest events loaded when the board opens.
  function addEvent(event, live = true) {
    if (lastEventId !== null && event.id <= lastEventId) return; // already shown
    lastEventId = event.id;
    const time = new Date(event.timestamp);
    const item = el("li", { class: live ? "fresh" : "earlier", "data-event-id": String(event.id),
      "data-event-type": event.eventType },
      el("span", { class: "id", text: "#" + event.id }),
      el("span", { class: "time",
        text: isNaN(time) ? "" : time.toLocaleTimeString([], { hour12: false }) }),
      el("span", { class: "type", text: event.eventType +
        (event.serviceName ? " · " + event.serviceName : "") }),
      el("span", { class: "summary", text: (event.workflowId ? event.workflowId + "  " : "") +
        summary(event) }));
    const list = $("event-list");
    list.prepend(item);
    while (list.children.length > FEED_MAX) list.lastChild.remove();
    $("feed-empty").hidden = true;
    $("feed-count").textContent = String(Number($("feed-count").textContent) + 1);
    $("last-event").textContent = "last event #" + event.id;
    if (live) react(event);
  }

  // The newest events so far, so the feed does not start empty; the socket then goes on
  // from the newest event id there is (`nextSince`), missing nothing in between.
  async function loadRecentEvents() {
    const page = await api("/events?tail=" + FEED_TAIL);
    for (const event of page.events) addEvent(event, false);
    if (lastEventId === null || page.nextSince > lastEventId) lastEventId = page.nextSince;
  }

  // Refresh the panels an event changes, at most once per second each.
  function react(event) {
    const type = event.eventType;
    if (event.workflowId) {
      lastEventByWorkflow.set(event.workflowId, type.replace(/^recovery_|^emergency_mode_/, ""));
      renderActive();
    }
    if (type.startsWith("recovery_") || type.startsWith("emergency_")) soon("active", loadActive);
    if (type.startsWith("breaker_") || type === "prediction_fired" || type.startsWith("recovery_") ||
        type === "catalog_changed") {
      soon("providers", loadProviders);
    }
    if (type.startsWith("incident_")) soon("incidents", loadIncidents);
    if (type === "enhanced_coordination_completed" || type === "recovery_route_applied") {
      soon("analytics", loadAnalytics, 5000);
    }
  }

  function soon(name, load, delay = 1000) {
    if (pending.has(name)) return;
    pending.set(name, setTimeout(() => {
      pending.delete(name);
      guarded(load)();
    }, delay));
  }

  function setConnection(state) {
    $("connection").dataset.state = state;
    $("connection").textContent = state;
  }

  function connect() {
    if (!token) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = lastEventId === null ? "" : "?since=" + lastEventId;
    const ws = new WebSocket(scheme + "//" + location.host + API + "/events" + query,
      [SUBPROTOCOL, "bearer." + token]);
    socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      reconnectDelay = 1000;
      setConnection("live");
    };
    ws.onmessage = (message) => addEvent(JSON.parse(message.data));
    ws.onclose = (close) => {
      if (socket !== ws) return; // replaced or signed out
      socket = null;
      setConnection("reconnecting");
      if (close.code === 4401) {
        signOut("The server closed the event stream: " + (close.reason || "token refused"));
        return;
      }
      if (!opened) {
        // A refused handshake carries no reason: ask the API whether the token still works.
        guarded(() => api("/events?limit=1"))();
      }
      const delay = close.code === 4008 ? 0 : reconnectDelay;
      reconnectDelay = Math.min(reconnectDelay * 2, 15000);
      timers.push(setTimeout(connect, delay));
    };
  }

  // ---- lifecycle -----------------------------------------------------------------------

  function guarded(load) {
    return async () => {
      try {
        await load();
      } catch (error) {
        if (error instanceof Unauthorized) signOut("Token refused: " + error.message);
        else console.warn(error);
      }
    };
  }

  function every(load, ms) {
    const run = guarded(load);
    run();
    timers.push(setInterval(run, ms));
  }

  function start() {
    every(loadProviders, REFRESH.providers);
    every(loadActive, REFRESH.active);
    every(loadIncidents, REFRESH.active);
    every(loadAnalytics, REFRESH.analytics);
    timers.push(setInterval(tickAges, 1000)); // ages move between refreshes
    guarded(loadRecentEvents)().then(connect);
  }

  function stop() {
    timers.forEach((t) => { clearTimeout(t); clearInterval(t); });
    timers = [];
    pending.forEach((t) => clearTimeout(t));
    pending.clear();
    const ws = socket;
    socket = null;
    if (ws) ws.close(1000, "signed out");
    setConnection("offline");
  }

  $("token-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const candidate = $("token-input").value.trim();
    $("token-input").value = "";
    if (candidate) signIn(candidate);
  });
  $("sign-out").addEventListener("click", () => signOut(""));

  if (token) signIn(token);
  else showBoard(false);
})();

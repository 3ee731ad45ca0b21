// cryptomon dashboard: plain JavaScript, no build step, no dependencies.
//
// It uses only the public API: REST for the state on load (and again after a
// `resync`), then the live feed /ws/live for every change. It remembers the
// last event position it saw and reconnects with ?since=<position>, so a
// dropped connection or a server restart loses nothing. All URLs are relative
// to the page, so it also works behind a reverse proxy under a sub-path.
(() => {
  "use strict";

  const BASE = new URL(".", document.baseURI);
  const HOUR_MS = 3600 * 1000;
  const LOG_LIMIT = 200;
  const RESOLVED_LIMIT = 10;
  const STALE_AFTER_MS = 15000; // disconnected this long: "stale", not just "reconnecting"
  const REFRESH_MIN_MS = 4000; // REST refresh on status_update, at most this often
  const TOKEN_KEY = "cryptomon.token";
  const REFETCH_MIN_MS = 1000; // one chain or pair re-read from REST at most this often
  const FEED_WAIT_MS = 1000; // no position from the feed this long after start: load anyway
  // The live feed's opt-in topics: judgements of chains' nodes and pairs' sources, and heads.
  const JUDGED_TOPICS = ["chains", "quotes", "heads"];

  const state = {
    providers: new Map(), // name -> ProviderView (REST shape, updated live)
    rateLimits: new Map(), // name -> RateLimitView
    samples: new Map(), // name -> [{t, ms, failed}] for the sparkline
    alerts: new Map(), // id -> AlertView
    chains: new Map(), // name -> ChainView (REST shape, updated live)
    pairs: new Map(), // name -> PairView
    refetches: new Map(), // "chain:<name>" or "pair:<name>" -> when it was last and is next read
    lostRegions: new Set(), // regions that stopped reporting: region_lost alerts, status_update
    logKeys: new Set(),
    position: null, // the last event position received
    ws: null,
    live: false,
    attempts: 0,
    everConnected: false,
    lastMessageAt: 0,
    lastDataAt: null,
    disconnectedAt: null,
    heartbeatSeconds: 30,
    tokenRequired: false,
    readTokenRequired: false, // reads need a token too (server.read_token_env)
    readTokenDeclined: false, // the prompt for it was cancelled: not asked again unbidden
    token: sessionStorage.getItem(TOKEN_KEY),
    loading: null,
    lastRefresh: 0,
    reconnectTimer: null,
    journal: [], // [receivedAt, message]: the last few seconds of live changes
  };
  // REST answers may be up to a second old (the server reuses them): after a load,
  // the live changes received shortly before it began are applied again on top.
  const JOURNAL_MS = 5000;
  const REST_MAX_AGE_MS = 1500;

  const $ = (id) => document.getElementById(id);
  const nextTask = () => new Promise((resolve) => setTimeout(resolve));

  // ---- small helpers ----------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  const two = (number) => String(number).padStart(2, "0");

  // By hand, not with toLocaleTimeString or Intl: the first Intl formatter a page makes
  // loads the locale data, 50 to 100 ms of blocked page on this project's machines.
  function clock(time) {
    if (time === null || time === undefined) return "–";
    const date = new Date(time);
    if (Number.isNaN(date.getTime())) return "–";
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  }

  function ago(time) {
    if (!time) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    return `${Math.floor(seconds / 3600)} h ago`;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${Number(value).toFixed(value >= 99.95 ? 0 : 1)}%`;
  }

  function url(path) {
    return new URL(path, BASE).toString();
  }

  // Each request in a task of its own: making one costs the page a few milliseconds (ten
  // with the browser's developer tools open), and the twenty of a load made in one go
  // were one long task.
  async function get(path) {
    await nextTask();
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return fetch(url(path), { headers, cache: "no-store" });
  }

  // A read; with a read token configured, sent with the token once known, and on a 401
  // asked again once the token is asked for (one prompt for however many reads at once).
  async function getJSON(path) {
    const sent = state.token;
    let response = await get(path);
    if (response.status === 401 && tokenForReads(sent)) {
      const retried = state.token;
      response = await get(path);
      if (response.status === 401 && state.token === retried) {
        // Not a token that reads: forgotten, and asked for again only by the button.
        forgetToken();
        state.readTokenDeclined = true;
        renderConnection();
      }
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // Whether a read refused with `refused` (the token it was sent with) may try again: another
  // read asked for the token meanwhile, or the reader gives one now.
  function tokenForReads(refused) {
    state.readTokenRequired = true;
    state.tokenRequired = true;
    if (state.token && state.token !== refused) return true;
    if (state.token) forgetToken(); // the one sent is not (or no longer) a token that reads
    if (state.readTokenDeclined) return false;
    if (askToken("This cryptomon needs a token to show its state.", READ_TOKEN_HINT)) {
      if (!state.live) connect();
      return true;
    }
    state.readTokenDeclined = true;
    renderConnection();
    return false;
  }

  function forgetToken() {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }

  // ---- the state from REST --------------------------------------------------------

  function loadState() {
    // One load at a time; a second request while one runs waits for it and runs again.
    if (state.loading) {
      state.loading.again = true;
      return state.loading.promise;
    }
    const run = { again: false, promise: null };
    state.loading = run;
    document.querySelector("main").setAttribute("aria-busy", "true");
    run.promise = (async () => {
      do {
        run.again = false;
        await fetchState();
      } while (run.again);
      state.loading = null;
      document.querySelector("main").removeAttribute("aria-busy");
    })();
    return run.promise;
  }

  async function fetchState() {
    const started = Date.now();
    try {
      // The cards first: they are the first screen, and on a slow link the page shows them
      // sooner when their two answers do not share it with the rest. Drawn alone, too, they
      // keep each piece of the browser's work short. Then what is below them, and the series.
      const [providers, limits] = await Promise.all([getJSON("api/providers"), getJSON("api/rate-limits")]);
      state.providers = new Map(providers.providers.map((p) => [p.name, p]));
      state.rateLimits = new Map(limits.rate_limits.map((r) => [r.provider, r]));
      $("load-error").hidden = true;
      renderProviders();
      const rest = Promise.all([
        getJSON("api/alerts?open=true&hours=9600&limit=500"),
        getJSON("api/alerts?hours=24&limit=500"),
        getJSON("api/logs/connection?hours=1&limit=60"),
        getJSON("api/logs/rate_limit?hours=1&limit=20"),
        getJSON("api/chains"),
        getJSON("api/quotes"),
      ]);
      const series = Promise.all([...state.providers.keys()].map(loadSeries));
      const [open, recent, connections, rateLog, chains, quotes] = await rest;
      // The list has each node's head, lag and states; one chain adds its rules (for the
      // bars' scale), lag in seconds and chain ids: what a refetch of one chain gives too.
      const views = await Promise.all(chains.chains.map((chain) => getJSON(chainPath(chain.name))));
      state.chains = new Map(views.map((chain) => [chain.name, chain]));
      state.pairs = new Map(quotes.pairs.map((pair) => [pair.name, pair]));
      state.alerts = new Map();
      for (const alert of [...recent.alerts, ...open.alerts]) state.alerts.set(alert.id, alert);
      const rows = [
        ...connections.logs.map((data) => ({ log_type: "connection", data })),
        ...rateLog.logs.map((data) => ({ log_type: "rate_limit", data })),
      ].sort((a, b) => a.data.position - b.data.position);
      await nextTask();
      for (const row of rows) addLogEntry(row.log_type, row.data, row.data.position);
      for (const [receivedAt, message] of state.journal) {
        if (receivedAt >= started - REST_MAX_AGE_MS) applyChange(message, true);
      }
      state.lastRefresh = Date.now();
      // A panel a task, as the log's rows above, for the same reason as the cards (live
      // changes in between apply to the state just set, and draw themselves).
      renderChains();
      await nextTask();
      renderPairs();
      await nextTask();
      renderAlerts();
      renderConnection();
      if (state.position !== null) $("position").textContent = String(state.position);
      $("alerts-and-log").hidden = false;
      await series;
    } catch (error) {
      $("load-error").hidden = false;
      $("load-error").textContent = `Could not load the state: ${error.message}`;
      if (!state.providers.size) $("summary").textContent = ""; // no longer "loading…"
      $("alerts-and-log").hidden = false;
    }
  }

  async function loadSeries(name) {
    try {
      const series = await getJSON(`api/providers/${encodeURIComponent(name)}/series?hours=1`);
      const half = (series.step_seconds * 1000) / 2;
      const points = series.points
        .filter((p) => p.probes > 0)
        .map((p) => ({
          t: Date.parse(p.timestamp) + half,
          ms: p.avg_response_time_ms,
          failed: p.avg_response_time_ms === null && p.failures > 0,
        }));
      // Keep live samples newer than the series' last point.
      const last = points.length ? points[points.length - 1].t + half : 0;
      const newer = (state.samples.get(name) || []).filter((s) => s.t > last);
      state.samples.set(name, [...points, ...newer]);
      renderProvider(name);
    } catch (error) {
      // A provider removed meanwhile: no sparkline; the next load tells.
    }
  }

  // Between events, refresh what moves with time (p95, uptime, usage) at most every few seconds.
  async function refreshFigures() {
    if (Date.now() - state.lastRefresh < REFRESH_MIN_MS || state.loading) return;
    state.lastRefresh = Date.now();
    try {
      const [providers, limits] = await Promise.all([getJSON("api/providers"), getJSON("api/rate-limits")]);
      for (const provider of providers.providers) {
        const known = state.providers.get(provider.name);
        // A status the feed delivered after this answer was computed is newer: keep it.
        if (known && known.status !== provider.status && Date.parse(known.last_status_change || 0) > Date.parse(provider.last_status_change || 0)) {
          provider.status = known.status;
          provider.last_status_change = known.last_status_change;
          // The window came with that status (a provider enters and leaves one as it does),
          // and so did its regions' statuses.
          provider.maintenance_window = known.maintenance_window;
          provider.regions = known.regions;
          provider.status_regions = known.status_regions;
        }
        state.providers.set(provider.name, provider);
      }
      for (const limit of limits.rate_limits) state.rateLimits.set(limit.provider, limit);
      renderProviders();
    } catch (error) {
      // Not fatal: the feed keeps the essentials current.
    }
  }

  // ---- the live feed -----------------------------------------------------------------

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.ws && state.ws.readyState <= WebSocket.OPEN) return; // one socket at a time
    if (state.tokenRequired && !state.token) {
      renderConnection();
      return;
    }
    const address = new URL("ws/live", BASE);
    address.protocol = address.protocol === "https:" ? "wss:" : "ws:";
    if (state.position !== null) address.searchParams.set("since", String(state.position));
    let ws;
    try {
      ws = new WebSocket(address);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      // With a token configured the first message must carry it; without one it is ignored.
      if (state.token) ws.send(JSON.stringify({ type: "auth", token: state.token }));
      // Raw events are not shown: the notices say what they mean.
      ws.send(JSON.stringify({ type: "unsubscribe", topics: ["events"] }));
      // Opt-in topics, added to the default set (a subscribe adds to what the client gets).
      ws.send(JSON.stringify({ type: "subscribe", topics: JUDGED_TOPICS }));
    };
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      onMessage(ws, message);
    };
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      state.ws = null;
      if (state.live || state.disconnectedAt === null) state.disconnectedAt = Date.now();
      state.live = false;
      if (event.code === 1008) {
        // Policy violation: the feed wants a token (or another one).
        state.tokenRequired = true;
        forgetToken();
      }
      renderConnection();
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (state.tokenRequired && !state.token) return;
    const delay = Math.min(5000, 500 * 2 ** state.attempts) + Math.random() * 250;
    state.attempts += 1;
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function onMessage(ws, message) {
    state.lastMessageAt = Date.now();
    const type = message.type;
    if (type === "connection_established") {
      state.live = true;
      state.attempts = 0;
      state.disconnectedAt = null;
      state.heartbeatSeconds = message.heartbeat_interval || state.heartbeatSeconds;
      state.lastDataAt = Date.now();
      const first = state.position === null;
      if (first || message.position < state.position) {
        // First connection, or a server whose log is behind ours (another database): start over.
        state.position = message.position;
        loadState();
      }
      state.everConnected = true;
      renderConnection();
      return;
    }
    if (typeof message.position === "number" && message.position > 0) {
      state.position = Math.max(state.position || 0, message.position);
      $("position").textContent = String(state.position);
    }
    state.lastDataAt = Date.now();
    if (type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    } else if (type === "status_update") {
      // The regions that stopped reporting: their chips say "lost" before REST does.
      const lost = Object.entries(message.regions || {}).filter(([, said]) => said === "lost").map(([region]) => region);
      setLostRegions(new Set(lost));
      refreshFigures();
    } else if (type === "resync") {
      // Status and alert changes this old are not replayed: read the current state.
      loadState();
    } else if (type === "subscribed") {
      // A resume's history goes out as the socket opens, before this subscription took
      // effect, so judgements it held never come: re-read the chains and pairs instead.
      if (JUDGED_TOPICS.every((topic) => message.topics.includes(topic))) {
        for (const name of state.chains.keys()) scheduleRefetch("chain", name);
        for (const name of state.pairs.keys()) scheduleRefetch("pair", name);
      }
    } else if (applyChange(message)) {
      const now = Date.now();
      state.journal.push([now, message]);
      while (state.journal.length && state.journal[0][0] < now - JOURNAL_MS) state.journal.shift();
    }
  }

  // Apply one change from the feed to the state and the page; false for messages that are not one.
  // Applying a change twice is harmless: loads apply the recent ones again (`replay`).
  function applyChange(message, replay) {
    switch (message.type) {
      case "head_update":
      case "chain_state_change":
        onChainMessage(message, replay);
        return true;
      case "quote_deviation":
        onQuoteMessage(message, replay);
        return true;
      case "provider_status_change":
        onStatusChange(message);
        return true;
      case "maintenance_window":
        onMaintenanceWindow(message);
        return true;
      case "new_log_entry":
        onLogEntry(message.log_type, message.data, message.position);
        return true;
      case "rate_limit_alert":
        onRateLimitAlert(message);
        return true;
      case "alert_raised":
      case "alert_acknowledged":
      case "alert_resolved":
        onAlert(message);
        return true;
      default:
        return false;
    }
  }

  function onStatusChange(message) {
    const provider = state.providers.get(message.provider);
    if (provider) {
      const changed = provider.status !== message.new_status;
      provider.status = message.new_status;
      provider.last_status_change = message.timestamp;
      if (message.region_statuses) {
        // Judged from its regions: each region's status then (REST's refresh adds why).
        const regions = { ...(provider.regions || {}) };
        for (const [region, status] of Object.entries(message.region_statuses)) {
          const known = regions[region] || { details: "", last_probe_at: null, consecutive_failures: 0 };
          regions[region] = { ...known, status, lost: status === "unknown" && Boolean(known.lost) };
        }
        provider.regions = regions;
        provider.status_regions = message.regions || [];
      }
      renderProvider(message.provider, changed);
      renderSummary();
    } else if (!state.loading) {
      loadState(); // a provider we have not seen: registered after our load
    }
    const level = { online: "good", offline: "bad", degraded: "warn", rate_limited: "warn", maintenance: "info", paused: "info" }[message.new_status] || "info";
    addLogEntry(
      "status",
      {
        timestamp: message.timestamp,
        text: `${message.provider}: ${message.old_status} → ${message.new_status} (${message.details})`,
        level,
      },
      message.position,
    );
  }

  // A provider entered a maintenance window (`active`) or left it: its card names the window
  // while it is in one, as REST's `maintenance_window` does.
  function onMaintenanceWindow(message) {
    const provider = state.providers.get(message.provider);
    if (provider) {
      const current = provider.maintenance_window;
      if (message.active) {
        provider.maintenance_window = { id: message.window_id, name: message.name, ends_at: message.ends_at || null };
      } else if (!current || current.id === message.window_id) {
        provider.maintenance_window = null;
      }
      renderProvider(message.provider);
    }
    const until = message.ends_at ? ` until ${clock(message.ends_at)}` : "";
    addLogEntry(
      `maintenance-${message.active ? "begins" : "ends"}`,
      {
        id: message.window_id,
        timestamp: message.timestamp,
        text: message.active
          ? `${message.provider}: in maintenance ${message.name}${until}`
          : `${message.provider}: out of maintenance ${message.name}`,
        level: "info",
      },
      message.position,
    );
  }

  function onLogEntry(logType, data, position) {
    if (logType === "failure") return; // the same probe comes as a connection or collection row
    const provider = state.providers.get(data.provider);
    if (logType === "connection" && provider) {
      provider.response_time_ms = data.response_time_ms;
      provider.last_check = data.timestamp;
      addSample(data.provider, data);
      renderProvider(data.provider);
    } else if (logType === "rate_limit") {
      const known = state.rateLimits.get(data.provider) || { provider: data.provider };
      Object.assign(known, {
        limit_type: data.limit_type,
        limit_value: data.limit_value,
        current_usage: data.current_usage,
        percentage: data.percentage,
        blocked_until: data.blocked_until,
        status: data.blocked_until && Date.parse(data.blocked_until) > Date.now() ? "blocked" : known.status,
      });
      state.rateLimits.set(data.provider, known);
      renderProvider(data.provider);
    }
    addLogEntry(logType, data, position);
  }

  function onRateLimitAlert(message) {
    const known = state.rateLimits.get(message.provider) || { provider: message.provider };
    Object.assign(known, { percentage: message.percentage, current_usage: message.used, limit_value: message.limit });
    state.rateLimits.set(message.provider, known);
    renderProvider(message.provider);
  }

  function onAlert(message) {
    const { type, alert, position } = message;
    state.alerts.set(alert.id, alert);
    renderAlerts();
    if (alert.kind === "region_lost") {
      // The service's own alert: its region's chips say "lost" while it is open.
      const lost = new Set(state.lostRegions);
      for (const region of alert.regions) {
        if (alert.resolved_at) lost.delete(region);
        else lost.add(region);
      }
      setLostRegions(lost);
    }
    const verb = { alert_raised: "raised", alert_acknowledged: "acknowledged", alert_resolved: "resolved" }[type];
    const who = type === "alert_acknowledged" && alert.acknowledged_by ? ` by ${alert.acknowledged_by}` : "";
    addLogEntry(
      `alert-${verb}`,
      {
        id: alert.id,
        timestamp: message.timestamp,
        text: `alert ${verb}${who}: ${alert.message}`,
        level: type === "alert_raised" ? (alert.severity === "critical" ? "bad" : "warn") : type === "alert_resolved" ? "good" : "info",
      },
      position,
    );
  }

  // ---- chains and quotes: applied from the feed, then re-read from REST -----------------

  function chainPath(name) {
    return `api/chains/${encodeURIComponent(name)}`;
  }

  function pairPath(name) {
    return `api/quotes/${encodeURIComponent(name)}`;
  }

  function setState(states, judgement, active) {
    const others = (states || []).filter((s) => s !== judgement);
    return active ? [...others, judgement] : others;
  }

  // A message says enough to update its node at once; the rest of the chain (other
  // nodes' lag in seconds, rates) comes with the re-read it schedules.
  function onChainMessage(message, replay) {
    const chain = state.chains.get(message.chain);
    const node = chain && chain.nodes.find((n) => n.provider === message.provider);
    if (node) {
      if (message.head !== undefined && message.head !== null) node.head = message.head;
      if (message.lag !== undefined) node.lag = message.lag;
      if (message.lag_seconds !== undefined) node.lag_seconds = message.lag_seconds;
      if (message.best_head !== undefined && message.best_head !== null) chain.best_head = message.best_head;
      if (message.type === "chain_state_change") node.states = setState(node.states, message.state, message.active);
      renderChain(message.chain);
    }
    if (!replay) scheduleRefetch("chain", message.chain);
  }

  function onQuoteMessage(message, replay) {
    const pair = state.pairs.get(message.pair);
    const source = pair && pair.sources.find((s) => s.provider === message.provider);
    if (source) {
      if (message.price !== undefined) source.price = message.price;
      if (message.deviation_percent !== undefined) source.deviation_percent = message.deviation_percent;
      if (message.median !== undefined && message.median !== null) {
        pair.median = message.median;
        pair.median_note = null;
      }
      source.states = setState(source.states, message.state, message.active);
      renderPair(message.pair);
    }
    if (!replay) scheduleRefetch("pair", message.pair);
  }

  // Re-read one chain or pair after a message about it: no sooner than a REST answer is
  // sure to include what the message said (answers may be a second old), and at most once
  // a second however many messages come (a chain's heads move at every probe).
  function scheduleRefetch(kind, name) {
    const key = `${kind}:${name}`;
    let entry = state.refetches.get(key);
    if (!entry) {
      entry = { kind, name, key, timer: null, running: false, lastAt: 0, wantedAt: 0 };
      state.refetches.set(key, entry);
    }
    entry.wantedAt = Date.now();
    armRefetch(entry);
  }

  function armRefetch(entry) {
    if (entry.timer !== null || entry.running) return;
    const at = Math.max(entry.wantedAt + REST_MAX_AGE_MS, entry.lastAt + REFETCH_MIN_MS);
    entry.timer = setTimeout(() => refetch(entry), Math.max(0, at - Date.now()));
  }

  async function refetch(entry) {
    entry.timer = null;
    entry.running = true;
    const started = Date.now();
    entry.lastAt = started;
    // Messages received before this are in the answer; later ones are applied on top.
    const covered = started - REST_MAX_AGE_MS;
    const chain = entry.kind === "chain";
    try {
      const view = await getJSON(chain ? chainPath(entry.name) : pairPath(entry.name));
      (chain ? state.chains : state.pairs).set(entry.name, view);
      for (const [receivedAt, message] of state.journal) {
        if (receivedAt >= covered && (chain ? message.chain : message.pair) === entry.name) {
          applyChange(message, true);
        }
      }
      if (chain) renderChains();
      else renderPairs();
    } catch (error) {
      // Not fatal: the next message, or the next load, tries again.
    } finally {
      entry.running = false;
      if (entry.wantedAt >= covered) armRefetch(entry);
    }
  }

  function addSample(name, data) {
    const failed = data.status === "failed" || data.status === "timeout";
    const sample = {
      t: Date.parse(data.timestamp) || Date.now(),
      ms: data.status === "success" ? data.response_time_ms : null,
      failed,
    };
    const samples = state.samples.get(name) || [];
    samples.push(sample);
    state.samples.set(name, samples.filter((s) => s.t > Date.now() - HOUR_MS));
  }

  // ---- rendering -------------------------------------------------------------------

  function renderSummary() {
    const counts = {};
    for (const provider of state.providers.values()) counts[provider.status] = (counts[provider.status] || 0) + 1;
    const parts = [];
    for (const status of ["online", "degraded", "offline", "rate_limited", "maintenance", "unknown", "unconfigured"]) {
      if (!counts[status]) continue;
      if (parts.length) parts.push(" · ");
      parts.push(el("b", null, counts[status]), ` ${status.replace("_", " ")}`);
    }
    $("summary").replaceChildren(...parts);
    $("provider-count").textContent = `(${state.providers.size})`;
  }

  function renderProviders() {
    const container = $("providers");
    const names = [...state.providers.keys()];
    for (const card of [...container.children]) {
      if (!state.providers.has(card.dataset.provider)) card.remove();
    }
    for (const name of names) renderProvider(name);
    // Keep the server's order.
    names.forEach((name, index) => {
      const card = cardFor(name);
      if (container.children[index] !== card) container.insertBefore(card, container.children[index] || null);
    });
    renderSummary();
  }

  function cardFor(name) {
    for (const card of $("providers").children) if (card.dataset.provider === name) return card;
    const card = el("article", "provider");
    card.dataset.provider = name;
    const head = el("div", "head");
    // The name links to the provider's own page: its history (providers/<name>).
    const title = el("h3", "name");
    const link = el("a", null, name);
    link.href = `providers/${encodeURIComponent(name)}`;
    title.append(link);
    head.append(title, el("span", "status"));
    const meta = el("div", "meta");
    meta.append(el("span", "category"), el("span", "checked"), el("span", "certificate"));
    // A chip per region its probes come from, its status in words: only with regions.
    const regions = el("ul", "regions");
    regions.setAttribute("aria-label", `${name} by region`);
    regions.hidden = true;
    const maintenance = el("p", "maintenance");
    maintenance.hidden = true;
    const figures = el("dl", "figures");
    for (const [key, label] of [["latency", "latency now"], ["p95", "p95 24 h"], ["uptime", "uptime 24 h"]]) {
      const cell = el("div");
      cell.append(el("dt", null, label), el("dd", key));
      figures.append(cell);
    }
    const spark = svg("svg", { class: "spark", viewBox: "0 0 120 34", preserveAspectRatio: "none", role: "img" });
    spark.append(svg("title"), svg("line", { class: "axis", x1: 0, y1: 33.5, x2: 120, y2: 33.5 }), svg("polyline", { points: "" }), svg("g", { class: "fails" }));
    const limit = el("div", "ratelimit");
    const bar = el("div", "bar");
    bar.append(el("span"));
    limit.append(bar, el("span", "usage"));
    const actions = el("div", "actions");
    const toggle = el("button", "pause");
    toggle.type = "button";
    toggle.addEventListener("click", () => pauseOrResume(name, toggle, card));
    actions.append(toggle);
    card.append(head, meta, regions, maintenance, figures, spark, limit, actions);
    $("providers").append(card);
    return card;
  }

  function renderProvider(name, changed) {
    const provider = state.providers.get(name);
    if (!provider) return;
    const card = cardFor(name);
    card.dataset.status = provider.status;
    card.querySelector(".status").textContent = provider.status.replace("_", " ");
    card.querySelector(".category").textContent = provider.category.replace(/_/g, " ");
    const checked = card.querySelector(".checked");
    checked.dataset.time = provider.last_check || "";
    checked.textContent = provider.last_check ? `checked ${ago(provider.last_check)}` : "not checked yet";
    const certificate = card.querySelector(".certificate");
    const days = provider.certificate ? provider.certificate.days_left : null;
    certificate.textContent = days === null ? "" : `TLS ${days < 0 ? "expired" : `${Math.floor(days)} d left`}`;
    certificate.title = provider.certificate ? `certificate expires ${provider.certificate.expires_at}` : "";
    // The server's default warning threshold: the alert says more.
    certificate.classList.toggle("soon", days !== null && days < 14);
    renderRegions(card.querySelector(".regions"), provider.regions || {});
    const held = provider.maintenance_window;
    const maintenance = card.querySelector(".maintenance");
    maintenance.hidden = !held;
    maintenance.textContent = held ? `maintenance: ${held.name}` : "";
    maintenance.title = held && held.ends_at ? `until ${clock(held.ends_at)} (${held.ends_at})` : "";
    if (held) maintenance.dataset.window = held.id;
    else delete maintenance.dataset.window;
    const toggle = card.querySelector("button.pause");
    const paused = provider.status === "paused";
    toggle.textContent = paused ? "Resume" : "Pause";
    toggle.title = paused
      ? `paused${provider.paused_by ? ` by ${provider.paused_by}` : ""}${provider.paused_at ? ` ${clock(provider.paused_at)}` : ""}: probe it again`
      : "stop probing it until resumed (its open alerts resolve)";
    card.querySelector(".latency").textContent = ms(provider.response_time_ms);
    card.querySelector(".p95").textContent = ms(provider.p95_ms_24h);
    card.querySelector(".uptime").textContent = percent(provider.uptime_24h);
    renderSparkline(card.querySelector(".spark"), state.samples.get(name) || []);
    renderRateLimit(card.querySelector(".ratelimit"), state.rateLimits.get(name));
    if (changed) {
      card.classList.add("changed");
      setTimeout(() => card.classList.remove("changed"), 1500);
    }
  }

  function setLostRegions(lost) {
    const same = lost.size === state.lostRegions.size && [...lost].every((region) => state.lostRegions.has(region));
    if (same) return;
    state.lostRegions = lost;
    if (!state.loading) renderProviders();
  }

  // Each region's view of the provider as a chip: its name and its status in words (the
  // colour says it again, never alone), why in its tooltip. Reused chips keep their place.
  function renderRegions(list, regions) {
    const names = Object.keys(regions).sort();
    list.hidden = names.length === 0;
    const existing = new Map([...list.children].map((chip) => [chip.dataset.region, chip]));
    const chips = names.map((region) => {
      let chip = existing.get(region);
      if (!chip) {
        chip = el("li", "region");
        chip.dataset.region = region;
        const dot = el("span", "dot");
        dot.setAttribute("aria-hidden", "true");
        chip.append(dot, el("span", "region-name", region), el("span", "region-status"));
      }
      const view = regions[region];
      // REST says so, or the feed's last status_update did (the region's view of every
      // provider is unknown then, until one of its instances probes again).
      const lost = view.lost || state.lostRegions.has(region);
      const word = lost ? "lost" : view.status.replace("_", " ");
      chip.dataset.status = view.status;
      chip.dataset.lost = String(Boolean(lost));
      chip.querySelector(".region-status").textContent = word;
      const checked = view.last_probe_at ? `; last probe ${clock(view.last_probe_at)}` : "";
      chip.title = `${region}: ${word}${view.details ? ` (${view.details})` : ""}${checked}`;
      return chip;
    });
    chips.forEach((chip, index) => {
      if (list.children[index] !== chip) list.insertBefore(chip, list.children[index] || null);
    });
    while (list.children.length > chips.length) list.lastChild.remove();
  }

  function renderSparkline(node, samples) {
    const now = Date.now();
    const recent = samples.filter((s) => s.t > now - HOUR_MS);
    const latencies = recent.filter((s) => s.ms !== null && s.ms !== undefined);
    const top = Math.max(1, ...latencies.map((s) => s.ms)) * 1.1;
    // The last hour; while there is less history than that, what there is fills the width.
    const span = Math.min(HOUR_MS, Math.max(60000, recent.length ? now - recent[0].t : 0));
    const x = (t) => (((t - (now - span)) / span) * 118 + 1).toFixed(1);
    node.querySelector("polyline").setAttribute(
      "points",
      latencies.map((s) => `${x(s.t)},${(32 - (s.ms / top) * 30).toFixed(1)}`).join(" "),
    );
    const fails = node.querySelector(".fails");
    fails.replaceChildren(...recent.filter((s) => s.failed).map((s) => svg("rect", { class: "fail", x: x(s.t), y: 29, width: 1.2, height: 5 })));
    const worst = latencies.length ? ms(Math.max(...latencies.map((s) => s.ms))) : "–";
    const minutes = Math.round(span / 60000);
    node.querySelector("title").textContent = `latency over the last ${minutes === 60 ? "hour" : `${minutes} min`} (peak ${worst}); red marks are failed probes`;
  }

  function renderRateLimit(node, limit) {
    const bar = node.querySelector(".bar");
    const usage = node.querySelector(".usage");
    if (!limit || !limit.limit_value) {
      bar.dataset.level = "";
      bar.firstChild.style.width = "0";
      usage.textContent = "rate limit unknown";
      return;
    }
    const share = Math.min(100, Math.max(0, Number(limit.percentage) || 0));
    const blocked = limit.blocked_until && Date.parse(limit.blocked_until) > Date.now();
    bar.dataset.level = blocked ? "blocked" : share >= 90 ? "critical" : share >= 80 ? "warning" : "";
    bar.firstChild.style.width = `${blocked ? 100 : share}%`;
    const per = (limit.limit_type || "").replace("per_", "/ ").replace("_", " ");
    usage.textContent = blocked
      ? `blocked until ${clock(limit.blocked_until)}`
      : `${limit.current_usage ?? "?"} of ${limit.limit_value} ${per} (${Math.round(share)}%)`;
  }

  // ---- rendering: chains and quotes ---------------------------------------------------

  const JUDGEMENT_TEXT = {
    lagging: "lagging",
    stale: "stale",
    wrong_chain: "wrong chain",
    deviation: "deviating",
    quote_stale: "stale data",
  };

  function blocks(count) {
    return `${count} block${count === 1 ? "" : "s"}`;
  }

  function duration(seconds) {
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function price(value) {
    if (value === null || value === undefined) return "–";
    const number = Number(value);
    const digits = Math.abs(number) >= 100 ? 2 : Math.abs(number) >= 1 ? 4 : 8;
    // 60,123.4: thousands grouped, no trailing zeros (as en-US's toLocaleString; see clock).
    const [whole, fraction] = Math.abs(number).toFixed(digits).split(".");
    const decimals = fraction.replace(/0+$/, "");
    return `${number < 0 ? "-" : ""}${whole.replace(/\B(?=(\d{3})+$)/g, ",")}${decimals ? `.${decimals}` : ""}`;
  }

  function signedPercent(value) {
    if (value === null || value === undefined) return "–";
    const fixed = Number(value).toFixed(2);
    return Number(fixed) > 0 ? `+${fixed}%` : `${Number(fixed) === 0 ? "0.00" : fixed}%`;
  }

  // The marks are words, not colours alone: a screen reader, and a colour-blind reader, get them.
  function marks(states, extra) {
    const cell = el("td", "marks");
    for (const judgement of states || []) {
      const mark = el("span", "mark", JUDGEMENT_TEXT[judgement] || judgement.replace(/_/g, " "));
      mark.dataset.state = judgement;
      cell.append(mark);
    }
    for (const [name, text] of extra) {
      const mark = el("span", "mark", text);
      mark.dataset.state = name;
      cell.append(mark);
    }
    if (!cell.children.length) cell.append(el("span", "muted", "ok"));
    return cell;
  }

  // One panel's cards, keyed by name, in the server's order; the section shows only with cards.
  function renderCards(container, section, views, key, render) {
    $(section).hidden = views.size === 0;
    const box = $(container);
    for (const card of [...box.children]) if (!views.has(card.dataset[key])) card.remove();
    [...views.keys()].forEach((name, index) => {
      const card = render(name);
      if (card && box.children[index] !== card) box.insertBefore(card, box.children[index] || null);
    });
  }

  function cardIn(container, key, name, className) {
    for (const card of $(container).children) if (card.dataset[key] === name) return card;
    const card = el("article", `judged-card ${className}`);
    card.dataset[key] = name;
    // Focusable, and named so: on a narrow screen its table scrolls sideways, and a
    // keyboard has to be able to scroll it too.
    card.tabIndex = 0;
    card.setAttribute("aria-label", `${className} ${name}`);
    $(container).append(card);
    return card;
  }

  function table(headings) {
    const grid = el("table");
    const row = el("tr");
    for (const heading of headings) {
      const th = el("th", null, heading);
      th.scope = "col";
      row.append(th);
    }
    const head = el("thead");
    head.append(row);
    grid.append(head, el("tbody"));
    return grid;
  }

  function renderChains() {
    renderCards("chains", "chains-section", state.chains, "chain", renderChain);
  }

  function renderChain(name) {
    const chain = state.chains.get(name);
    if (!chain) return null;
    const card = cardIn("chains", "chain", name, "chain");
    const troubled = chain.nodes.filter((n) => n.states && n.states.length).length;
    card.dataset.troubled = String(troubled > 0);
    const head = el("div", "head");
    const best = el("span", "best", chain.best_head === null ? "no best head yet" : `best head ${chain.best_head}`);
    head.append(el("h3", "name", name), best);
    const lagBlocks = chain.rules ? chain.rules.lag_blocks : null;
    const rule = el(
      "p",
      "rule muted",
      `${chain.nodes.length} node${chain.nodes.length === 1 ? "" : "s"}` +
        (lagBlocks === null ? "" : ` · lagging past ${blocks(lagBlocks)} behind`) +
        (troubled ? ` · ${troubled} not keeping up` : ""),
    );
    // Bars share one scale per chain: the most behind fills it, and a lag within the
    // threshold never looks like a long one.
    const lags = chain.nodes.map((n) => n.lag || 0);
    const scale = Math.max(1, 2 * (lagBlocks || 0), ...lags);
    const grid = table(["node", "head", "behind the best head", "state"]);
    for (const node of chain.nodes) {
      const row = el("tr");
      row.dataset.provider = node.provider;
      row.dataset.states = (node.states || []).join(" ");
      const lag = el("td", "lag");
      const bar = el("div", "bar");
      bar.setAttribute("aria-hidden", "true");
      const fill = el("span");
      fill.style.width = `${node.lag ? Math.max(2, (100 * node.lag) / scale) : 0}%`;
      bar.append(fill);
      bar.dataset.level = (node.states || []).includes("lagging") ? "warning" : "";
      let text = "–";
      if (node.lag !== null && node.lag !== undefined) {
        text = blocks(node.lag);
        if (node.lag_seconds !== null && node.lag_seconds !== undefined && node.lag > 0) text += ` (${duration(node.lag_seconds)})`;
      }
      lag.append(bar, el("span", "lag-text", text));
      const extra = [];
      if ((node.states || []).includes("wrong_chain") && node.chain_id !== null && node.chain_id !== undefined) {
        extra.push(["chain_id", `answers chain id ${node.chain_id}`]);
      }
      if (node.succeeded === false) extra.push(["failed", "last probe failed"]);
      row.append(
        el("th", "node", node.provider),
        el("td", "node-head", node.head === null || node.head === undefined ? "–" : node.head),
        lag,
        marks(node.states, extra),
      );
      row.firstChild.scope = "row";
      grid.tBodies[0].append(row);
    }
    card.replaceChildren(head, rule, grid);
    return card;
  }

  function renderPairs() {
    renderCards("quotes", "quotes-section", state.pairs, "pair", renderPair);
  }

  function renderPair(name) {
    const pair = state.pairs.get(name);
    if (!pair) return null;
    const card = cardIn("quotes", "pair", name, "pair");
    card.dataset.troubled = String(pair.sources.some((s) => s.states && s.states.length));
    const head = el("div", "head");
    head.append(el("h3", "name", name), el("span", "median", pair.median === null ? "no median" : `median ${price(pair.median)}`));
    const parts = [];
    if (pair.median === null && pair.median_note) parts.push(el("p", "median-note", pair.median_note));
    const grid = table(["source", "price", "off the median", "state"]);
    for (const source of pair.sources) {
      const row = el("tr");
      row.dataset.provider = source.provider;
      row.dataset.states = (source.states || []).join(" ");
      const extra = [];
      if ((source.states || []).includes("quote_stale") && source.data_age_seconds !== null && source.data_age_seconds !== undefined) {
        extra.push(["data_age", `data ${duration(source.data_age_seconds)} old`]);
      }
      if (source.succeeded === false) extra.push(["failed", "last probe failed"]);
      row.append(
        el("th", "source", source.provider),
        el("td", "price", price(source.price)),
        el("td", "deviation", signedPercent(source.deviation_percent)),
        marks(source.states, extra),
      );
      row.firstChild.scope = "row";
      grid.tBodies[0].append(row);
    }
    card.replaceChildren(head, ...parts, grid);
    return card;
  }

  function renderAlerts() {
    const all = [...state.alerts.values()];
    const open = all.filter((a) => !a.resolved_at).sort((a, b) => b.position - a.position);
    const resolved = all
      .filter((a) => a.resolved_at)
      .sort((a, b) => Date.parse(b.resolved_at) - Date.parse(a.resolved_at))
      .slice(0, RESOLVED_LIMIT);
    fillAlerts($("open-alerts"), open, false);
    fillAlerts($("resolved-alerts"), resolved, true);
    $("open-count").textContent = open.length ? String(open.length) : "";
    $("no-open-alerts").hidden = open.length > 0;
    $("no-resolved-alerts").hidden = resolved.length > 0;
  }

  function fillAlerts(list, alerts, resolved) {
    const existing = new Map([...list.children].map((item) => [item.dataset.alertId, item]));
    const items = alerts.map((alert) => {
      const item = existing.get(String(alert.id)) || el("li", "alert");
      updateAlertItem(item, alert, resolved);
      return item;
    });
    // Reuse the elements (a button mid-click survives an update); only order changes.
    items.forEach((item, index) => {
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
    });
    while (list.children.length > items.length) list.lastChild.remove();
  }

  function updateAlertItem(item, alert, resolved) {
    item.dataset.alertId = String(alert.id);
    item.dataset.severity = alert.severity;
    item.dataset.acknowledged = String(alert.acknowledged);
    item.classList.toggle("resolved-alert", resolved);
    let message = item.querySelector(".message");
    if (!message) {
      message = el("div", "message");
      item.append(message, el("div", "when"), el("div", "actions"));
    }
    message.replaceChildren(el("span", "severity", alert.severity), document.createTextNode(alert.message));
    const when = resolved
      ? `raised ${clock(alert.raised_at)}, resolved ${clock(alert.resolved_at)}`
      : `raised ${clock(alert.raised_at)} (${ago(alert.raised_at)})`;
    // The service's own alert (a region stopped reporting) has no provider.
    const whose = alert.provider === null ? "cryptomon" : alert.provider;
    const where = alert.regions && alert.regions.length ? ` (${alert.regions.join(", ")})` : "";
    item.querySelector(".when").textContent = `${whose} · ${alert.kind.replace("_", " ")}${where} · ${when}`;
    const actions = item.querySelector(".actions");
    if (alert.acknowledged) {
      const by = alert.acknowledged_by ? ` by ${alert.acknowledged_by}` : "";
      const text = `acknowledged${by} ${clock(alert.acknowledged_at)}`;
      if (actions.textContent !== text) actions.replaceChildren(el("span", "acked", text));
    } else if (resolved) {
      actions.replaceChildren(el("span", "muted", "not acknowledged"));
    } else if (!actions.querySelector("button")) {
      const button = el("button", "ack", "Acknowledge");
      button.type = "button";
      button.addEventListener("click", () => acknowledge(alert.id, button, item));
      actions.replaceChildren(button);
    }
  }

  function addLogEntry(kind, data, position) {
    const key = `${position}:${kind}:${data.endpoint || data.id || ""}`;
    if (state.logKeys.has(key)) return;
    state.logKeys.add(key);
    const [text, level] = logLine(kind, data);
    const item = el("li");
    item.dataset.level = level;
    item.dataset.position = String(position);
    const time = el("time", null, clock(data.timestamp || Date.now()));
    if (data.timestamp) time.dateTime = data.timestamp;
    item.append(time, el("span", "text", text));
    const log = $("log");
    // Newest first; an older row (from a load) goes below newer ones.
    let before = log.firstChild;
    while (before && Number(before.dataset.position) > position) before = before.nextSibling;
    log.insertBefore(item, before);
    while (log.children.length > LOG_LIMIT) {
      const last = log.lastChild;
      last.remove();
    }
    if (state.logKeys.size > LOG_LIMIT * 10) state.logKeys = new Set([...state.logKeys].slice(-LOG_LIMIT * 5));
  }

  function logLine(kind, data) {
    switch (kind) {
      case "connection":
      case "collection": {
        const what = kind === "connection" ? "health" : data.endpoint;
        if (data.status === "success") return [`${data.provider} ${what} ok ${ms(data.response_time_ms)}`, ""];
        const why = [data.http_status ? `HTTP ${data.http_status}` : null, data.error_type, data.error_message]
          .filter(Boolean)
          .join(": ");
        return [`${data.provider} ${what} ${data.status}${why ? ` (${why})` : ""}`, data.status === "rate_limited" ? "warn" : "bad"];
      }
      case "rate_limit": {
        const blocked = data.blocked_until ? `, blocked until ${clock(data.blocked_until)}` : "";
        return [`${data.provider} rate limit ${data.current_usage}/${data.limit_value} (${Math.round(data.percentage)}%)${blocked}`, data.blocked_until || data.percentage >= 80 ? "warn" : ""];
      }
      default:
        return [data.text, data.level || "info"];
    }
  }

  function renderConnection() {
    const box = $("connection");
    const text = $("connection-text");
    const button = $("token-button");
    let mode;
    let label;
    if (state.tokenRequired && !state.token) {
      mode = "needs-token";
      label = state.readTokenRequired ? "needs a token to read" : "live feed needs the API token";
    } else if (state.live) {
      mode = "live";
      label = "live";
    } else if (!state.everConnected) {
      mode = "connecting";
      label = "connecting…";
    } else {
      const since = state.lastDataAt || state.disconnectedAt || Date.now();
      const down = state.disconnectedAt ? Date.now() - state.disconnectedAt : 0;
      mode = down < STALE_AFTER_MS ? "reconnecting" : "stale";
      label = mode === "reconnecting" ? `reconnecting… (last data ${clock(since)})` : `stale since ${clock(since)} · reconnecting`;
    }
    box.dataset.state = mode;
    text.textContent = label;
    button.hidden = mode !== "needs-token";
    document.body.classList.toggle("not-live", mode !== "live");
  }

  // ---- writes: acknowledging, pausing and resuming ------------------------------------

  const WRITE_TOKEN_HINT = "API token (the value of the server's CRYPTOMON_API_TOKEN):";
  const READ_TOKEN_HINT = "Read token (the server's read_token_env names where it is), or the API token:";

  // One token is kept, whichever was given: the API token reads too, so a read token is
  // replaced by it when a write asks, and never the other way round.
  function askToken(reason, hint = WRITE_TOKEN_HINT) {
    const given = window.prompt(`${reason}\n${hint}`);
    if (!given || !given.trim()) return false;
    state.token = given.trim();
    state.readTokenDeclined = false;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    return true;
  }

  // The server refused the token given for want of the API token (a read token's 403).
  function needsWriteToken(response) {
    return response.status === 403 && (response.headers.get("WWW-Authenticate") || "").includes("insufficient_scope");
  }

  function post(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return fetch(url(path), { method: "POST", headers });
  }

  // A write: asked again with the token once the server says it needs one.
  async function postWithToken(path, why) {
    let response = await post(path);
    if ((response.status === 401 || needsWriteToken(response)) && askToken(`This cryptomon needs its API token to ${why}.`)) {
      response = await post(path);
      if (response.status !== 401 && state.tokenRequired && !state.live) connect();
    }
    if (response.status === 401) forgetToken();
    return response;
  }

  async function problemDetail(response) {
    try {
      return (await response.json()).detail || `HTTP ${response.status}`;
    } catch (error) {
      return `HTTP ${response.status}`; // not a problem document
    }
  }

  async function pauseOrResume(name, button, card) {
    const provider = state.providers.get(name);
    if (!provider) return;
    const verb = provider.status === "paused" ? "resume" : "pause";
    button.disabled = true;
    const problem = card.querySelector(".problem");
    if (problem) problem.remove();
    try {
      const response = await postWithToken(`api/providers/${encodeURIComponent(name)}/${verb}`, `${verb} providers`);
      if (response.ok) {
        const body = await response.json();
        state.providers.set(name, { ...provider, ...body });
        renderProvider(name, true);
        renderSummary();
        return;
      }
      card.append(el("div", "problem", `Not ${verb}d: ${await problemDetail(response)}`));
    } catch (error) {
      card.append(el("div", "problem", `Not ${verb}d: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  }

  async function acknowledge(id, button, item) {
    button.disabled = true;
    const problem = item.querySelector(".problem");
    if (problem) problem.remove();
    try {
      const response = await postWithToken(`api/alerts/${id}/acknowledge`, "acknowledge alerts");
      if (response.ok || response.status === 409) {
        if (response.ok) {
          const body = await response.json();
          state.alerts.set(body.alert.id, body.alert);
        } else {
          const current = await getJSON(`api/alerts?hours=9600&limit=5000`);
          for (const alert of current.alerts) if (alert.id === id) state.alerts.set(id, alert);
        }
        renderAlerts();
        return;
      }
      item.append(el("div", "problem", `Not acknowledged: ${await problemDetail(response)}`));
    } catch (error) {
      item.append(el("div", "problem", `Not acknowledged: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  }

  // ---- start ---------------------------------------------------------------------------

  function tick() {
    // A socket that went silent past two heartbeats is dead even if no close arrived.
    if (state.live && state.ws && Date.now() - state.lastMessageAt > 2.5 * state.heartbeatSeconds * 1000) {
      state.ws.close();
    }
    renderConnection();
    for (const checked of document.querySelectorAll(".provider .checked")) {
      if (checked.dataset.time) checked.textContent = `checked ${ago(checked.dataset.time)}`;
    }
  }

  async function start() {
    $("token-button").addEventListener("click", () => {
      const asked = state.readTokenRequired
        ? askToken("This cryptomon needs a token to show its state.", READ_TOKEN_HINT)
        : askToken("The live feed of this cryptomon needs its API token.");
      if (!asked) return;
      connect();
      if (state.readTokenRequired) loadState();
    });
    try {
      // With a read token configured this read asks for the token first (see getJSON).
      const config = await getJSON("api/config/stats");
      state.readTokenRequired = Boolean(config.read_token_configured);
      state.tokenRequired = Boolean(config.api_token_configured) || state.readTokenRequired;
    } catch (error) {
      // Unknown: try without; a 1008 close tells us.
    }
    connect();
    setInterval(tick, 1000);
    // The load that counts starts once the feed says its position (see onMessage), so a
    // quick feed means one load, not two. The page works without the feed too: what REST
    // says is shown at once when there is no socket, or when the feed is slow to come.
    if (!state.ws) loadState();
    else setTimeout(() => state.position === null && loadState(), FEED_WAIT_MS);
  }

  start();
})();

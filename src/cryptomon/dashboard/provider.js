// cryptomon provider page: one provider's history. Plain JavaScript, no build step, no
// dependencies, no charting library: the charts are SVG drawn here.
//
// It reads only the public REST API: the provider's view, its latency series and stats
// (1 h, 24 h, 7 d, 30 d, from the rollups), its uptime per day (/api/uptime/daily), its
// rate-limit usage per hour, its last probes (/api/logs/connection) and its chain or
// pair. Every box has its size before the data comes, so the page holds still as it
// fills, and it reads everything again every REFRESH_MS. URLs are relative to the page
// (`../` is the dashboard), so it works behind a reverse proxy under a sub-path too.
(() => {
  "use strict";

  const BASE = new URL("..", document.baseURI);
  const NAME = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
  const REFRESH_MS = 15000;
  const TOKEN_KEY = "cryptomon.token"; // the dashboard's: a token given there works here
  const DAYS = 90;
  const RATE_HOURS = 168;
  // Chart coordinates (the viewBox in provider.html): the SVG is stretched to its box
  // (preserveAspectRatio none), lines keep their width (vector-effect), labels are HTML.
  const W = 1000;
  const H = 200;
  const SPANS = { "1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days", "30d": "the last 30 days" };

  const state = { token: sessionStorage.getItem(TOKEN_KEY), needsToken: false, timer: null, loading: false, unknown: false };

  const $ = (id) => document.getElementById(id);

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

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
  }

  function uptimeText(value) {
    if (value === null || value === undefined) return "–";
    return value >= 100 ? "100%" : `${Number(value).toFixed(2)}%`;
  }

  // Times and counts by hand, not with toLocale*String or Intl: the first Intl formatter a
  // page makes loads the locale data, 50 to 100 ms of blocked page on this project's machines.
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const two = (number) => String(number).padStart(2, "0");

  function count(value, noun) {
    const grouped = String(value).replace(/\B(?=(\d{3})+$)/g, ","); // 1,234 as in en-US
    return `${grouped} ${noun}${value === 1 ? "" : "s"}`;
  }

  function clock(time) {
    if (!time) return "–";
    const date = new Date(time);
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  }

  function stamp(time) {
    if (!time) return "–";
    const date = new Date(time);
    return `${MONTHS[date.getMonth()]} ${date.getDate()} ${clock(time)}`;
  }

  function ago(time) {
    if (!time) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  const name = encodeURIComponent(NAME);

  class Missing extends Error {}

  const nextTask = () => new Promise((resolve) => setTimeout(resolve));

  // Each request in a task of its own: making one costs the page a few milliseconds (ten
  // with the browser's developer tools open), and the sixteen of a load made in one go
  // were one long task.
  async function getJSON(path) {
    await nextTask();
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const response = await fetch(new URL(path, BASE), { headers, cache: "no-store" });
    if (response.status === 401) {
      state.needsToken = true;
      throw new Error("the server needs the API token to read");
    }
    if (response.status === 404) throw new Missing(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // A part that may not exist (no rate limit known): null instead of an error.
  async function optional(path) {
    try {
      return await getJSON(path);
    } catch (error) {
      if (error instanceof Missing) return null;
      throw error;
    }
  }

  // ---- loading ----------------------------------------------------------------------

  async function load() {
    if (state.loading) return;
    state.loading = true;
    const charts = [...document.querySelectorAll(".chart[data-hours]")];
    try {
      // First the provider itself: a name nobody has is said so, not a pile of 404s.
      const view = await optional(`api/providers/${name}`);
      if (view === null) {
        state.unknown = true;
        throw new Missing(NAME);
      }
      const [daily, limit, history, probes, chains, quotes, ...figures] = await Promise.all([
        getJSON(`api/uptime/daily?days=${DAYS}&provider=${name}`),
        optional(`api/rate-limits/${name}`),
        optional(`api/rate-limits/${name}/history?hours=${RATE_HOURS}`),
        getJSON(`api/logs/connection?provider=${name}&hours=720&limit=20`),
        getJSON("api/chains"),
        getJSON("api/quotes"),
        ...charts.flatMap((chart) => [
          getJSON(`api/providers/${name}/series?hours=${chart.dataset.hours}`),
          getJSON(`api/providers/${name}/stats?hours=${chart.dataset.hours}`),
        ]),
      ]);
      const chain = chains.chains.find((c) => c.nodes.some((n) => n.provider === NAME));
      const pair = quotes.pairs.find((p) => p.sources.some((s) => s.provider === NAME));
      const chainView = chain ? await optional(`api/chains/${encodeURIComponent(chain.name)}`) : null;
      const stats30 = figures[figures.length - 1];
      renderHead(view, stats30);
      renderUptime(daily.dates, daily.providers[0]);
      charts.forEach((chart, index) => renderLatency(chart, figures[2 * index], figures[2 * index + 1]));
      renderRateLimit($("ratelimit-chart"), limit, history);
      renderProbes(probes.logs);
      renderFacts(view, chainView, pair);
      $("load-error").hidden = true;
      setRefreshed("live", `updated ${clock(Date.now())}`);
    } catch (error) {
      const box = $("load-error");
      box.hidden = false;
      if (state.unknown) {
        box.textContent = `No provider is named “${NAME}”. `;
        const back = el("a", null, "See all providers.");
        back.href = "../";
        box.append(back);
        $("provider-name").textContent = NAME || "–";
        setRefreshed("stale", "unknown provider");
      } else {
        box.textContent = `Could not load the provider: ${error.message}`;
        setRefreshed(state.needsToken ? "needs-token" : "stale", state.needsToken ? "needs the API token" : `stale since ${clock(Date.now())}`);
      }
    } finally {
      state.loading = false;
      $("page").removeAttribute("aria-busy");
    }
  }

  function setRefreshed(mode, text) {
    $("refreshed").dataset.state = mode;
    $("refreshed-text").textContent = text;
    $("token-button").hidden = mode !== "needs-token";
  }

  // ---- the head -------------------------------------------------------------------

  function renderHead(view, stats30) {
    document.title = `${view.name} · cryptomon`;
    $("provider-name").textContent = view.name;
    const pill = $("provider-status");
    pill.dataset.status = view.status;
    pill.textContent = view.status.replace("_", " ");
    renderRegions($("provider-regions"), view.regions || {});
    const meta = [view.category.replace(/_/g, " "), `from the ${view.source}`];
    if (view.maintenance_window) meta.push(`maintenance: ${view.maintenance_window.name}`);
    if (view.status === "paused" && view.paused_by) meta.push(`paused by ${view.paused_by}`);
    if (view.removed) meta.push(`removed ${stamp(view.removed_at)}`);
    meta.push(view.base_url);
    $("provider-meta").textContent = meta.join(" · ");
    $("figure-latency").textContent = ms(view.response_time_ms);
    $("figure-p95").textContent = ms(view.p95_ms_24h);
    $("figure-uptime-24h").textContent = uptimeText(view.uptime_24h);
    $("figure-uptime-30d").textContent = uptimeText(stats30.uptime_30d);
    const checked = $("figure-checked");
    checked.textContent = ago(view.last_check);
    checked.title = view.last_check || "";
  }

  // Each region's view of the provider, as on the dashboard's cards: a chip with the
  // region's name and its status in words, why in its tooltip.
  function renderRegions(list, regions) {
    const names = Object.keys(regions).sort();
    list.hidden = names.length === 0;
    list.replaceChildren(
      ...names.map((region) => {
        const view = regions[region];
        const word = view.lost ? "lost" : view.status.replace("_", " ");
        const chip = el("li", "region");
        chip.dataset.region = region;
        chip.dataset.status = view.status;
        chip.dataset.lost = String(Boolean(view.lost));
        const dot = el("span", "dot");
        dot.setAttribute("aria-hidden", "true");
        chip.append(dot, el("span", "region-name", region), el("span", "region-status", word));
        const failures = view.consecutive_failures ? `; ${count(view.consecutive_failures, "consecutive failure")}` : "";
        chip.title = `${region}: ${word}${view.details ? ` (${view.details})` : ""}; last probe ${stamp(view.last_probe_at)}${failures}`;
        return chip;
      }),
    );
  }

  // ---- the 90-day bar -------------------------------------------------------------

  function level(uptime) {
    if (uptime === null || uptime === undefined) return "none";
    if (uptime >= 99.9) return "full";
    if (uptime >= 99) return "high";
    if (uptime >= 95) return "fair";
    return "poor";
  }

  function dayText(day) {
    if (day.uptime === null) return `${day.date} · no data`;
    return `${day.date} · ${uptimeText(day.uptime)} uptime · ${count(day.probes, "probe")} · ${count(day.failures, "failure")}`;
  }

  function renderUptime(dates, bar) {
    const box = $("uptime-bar");
    const days = dates.map((date, index) => ({
      date,
      uptime: bar.uptime_by_day[index],
      probes: bar.probes_by_day[index],
      failures: bar.failures_by_day[index],
    }));
    if (box.children.length !== days.length) box.replaceChildren(...days.map(() => el("span", "day")));
    days.forEach((day, index) => {
      const cell = box.children[index];
      cell.dataset.date = day.date;
      cell.dataset.level = level(day.uptime);
      cell.dataset.index = String(index);
      cell.dataset.tip = dayText(day);
    });
    const known = days.filter((day) => day.uptime !== null);
    const below = known.filter((day) => day.uptime < 99.9);
    const worst = known.reduce((low, day) => (low === null || day.uptime < low.uptime ? day : low), null);
    const parts = [];
    if (!known.length) {
      parts.push(`no probes in the last ${days.length} days`);
    } else {
      parts.push(`${uptimeText(bar.uptime)} over ${count(known.length, "day")} with probes`);
      parts.push(below.length ? `${count(below.length, "day")} under 99.9%, the worst ${worst.date} at ${uptimeText(worst.uptime)}` : "every day at 99.9% or more");
      const empty = days.length - known.length;
      if (empty) parts.push(`${count(empty, "day")} without data`);
    }
    const summary = parts.join(" · ");
    $("uptime-summary").textContent = summary;
    box.setAttribute("aria-label", `uptime per day, ${days[0].date} to ${days[days.length - 1].date}: ${summary}`);
  }

  function showTip(cell) {
    if (!cell.dataset.tip) return; // a cell before its data
    const tip = $("uptime-tip");
    const wrap = cell.parentElement.parentElement;
    tip.textContent = cell.dataset.tip;
    tip.hidden = false;
    for (const other of cell.parentElement.querySelectorAll(".day.active")) other.classList.remove("active");
    cell.classList.add("active");
    // Centred on the cell, kept inside the bar's width.
    const wrapBox = wrap.getBoundingClientRect();
    const cellBox = cell.getBoundingClientRect();
    const width = tip.offsetWidth;
    const centre = cellBox.left + cellBox.width / 2 - wrapBox.left;
    tip.style.left = `${Math.max(0, Math.min(wrapBox.width - width, centre - width / 2))}px`;
    state.activeDay = Number(cell.dataset.index);
  }

  function hideTip() {
    $("uptime-tip").hidden = true;
    for (const cell of $("uptime-bar").querySelectorAll(".day.active")) cell.classList.remove("active");
  }

  function wireUptimeBar() {
    const box = $("uptime-bar");
    // The cells are there before their data: the bar has its size from the start.
    box.replaceChildren(...Array.from({ length: DAYS }, () => el("span", "day")));
    box.addEventListener("pointerover", (event) => {
      const cell = event.target.closest(".day");
      if (cell) showTip(cell);
    });
    box.addEventListener("pointerleave", () => {
      if (document.activeElement !== box) hideTip();
    });
    box.addEventListener("focus", () => {
      const cells = box.children;
      if (cells.length) showTip(cells[state.activeDay ?? cells.length - 1]);
    });
    box.addEventListener("blur", hideTip);
    box.addEventListener("keydown", (event) => {
      const cells = box.children;
      if (!cells.length) return;
      const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const from = state.activeDay ?? cells.length - 1;
      const to = Math.max(0, Math.min(cells.length - 1, from + moves[event.key]));
      showTip(cells[to]);
    });
  }

  // ---- charts -----------------------------------------------------------------------

  // The frame of a chart (provider.html): the SVG and the HTML labels over it, there from
  // the start, so a redraw changes what is inside and never the size.
  function frame(figure) {
    return figure.querySelector(".chart-frame");
  }

  function path(values, x, y) {
    // A line through the known values, broken where a gap is much longer than the usual
    // distance between them (a provider probed every 5 minutes has a point every fifth
    // minute: no gap; one that stopped answering for an hour has one). A lone value is a
    // dot: a zero-length line with round caps, whatever the stretch.
    const known = [];
    values.forEach((value, index) => {
      if (value !== null && value !== undefined) known.push(index);
    });
    const gaps = known.slice(1).map((index, i) => index - known[i]).sort((a, b) => a - b);
    const usual = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 1;
    const longest = Math.max(2, 2 * usual);
    let d = "";
    known.forEach((index, i) => {
      const point = `${x(index).toFixed(1)},${y(values[index]).toFixed(1)}`;
      const joined = i > 0 && index - known[i - 1] <= longest;
      const joins = i + 1 < known.length && known[i + 1] - index <= longest;
      if (joined) d += `L${point}`;
      else d += joins ? `M${point}` : `M${point}l0,0`;
    });
    return d;
  }

  function renderLatency(figure, series, stats) {
    const box = frame(figure);
    const drawing = box.querySelector("svg");
    const points = series.points;
    const n = Math.max(1, points.length);
    const p50 = points.map((p) => p.p50_ms ?? null);
    const p95 = points.map((p) => p.p95_ms ?? null);
    const known = p95.filter((v) => v !== null);
    const top = Math.max(1, ...known) * 1.1;
    const x = (i) => ((i + 0.5) / n) * W;
    const y = (v) => H - 2 - (v / top) * (H - 12);
    const fails = points
      .map((p, i) => (p.failures > 0 ? svg("rect", { class: "fail", x: ((i / n) * W).toFixed(1), y: H - 14, width: Math.max(W / n, 3).toFixed(1), height: 14 }) : null))
      .filter(Boolean);
    drawing.replaceChildren(
      svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
      svg("line", { class: "grid", x1: 0, y1: y(top / 1.1), x2: W, y2: y(top / 1.1) }),
      ...fails,
      svg("path", { class: "p95", d: path(p95, x, y) }),
      svg("path", { class: "p50", d: path(p50, x, y) }),
    );
    box.querySelector(".y-top").textContent = known.length ? ms(top / 1.1) : "";
    const health = stats.connection_stats;
    const range = figure.dataset.range;
    let summary;
    if (!health.total_attempts) {
      summary = "no probes";
    } else {
      summary = `p50 ${ms(health.p50_ms)} · p95 ${ms(health.p95_ms)} · ${count(health.total_attempts, "probe")}, ${uptimeText(health.uptime)} up`;
    }
    figure.querySelector(".chart-summary").textContent = summary;
    const worst = known.length ? Math.max(...known) : null;
    const worstAt = worst === null ? null : points[p95.indexOf(worst)].timestamp;
    const steps = series.step_seconds === 60 ? "minute" : series.step_seconds === 3600 ? "hour" : "day";
    drawing.setAttribute(
      "aria-label",
      `Latency over ${SPANS[range]}, per ${steps}: ${summary}` +
        (worst === null ? "" : `; the highest p95 of a ${steps} was ${ms(worst)}, at ${stamp(worstAt)}`) +
        (fails.length ? `; ${count(fails.length, steps)} with failed probes` : ""),
    );
    figure.dataset.points = String(known.length);
  }

  function renderRateLimit(figure, limit, history) {
    const box = frame(figure);
    const drawing = box.querySelector("svg");
    const caption = figure.querySelector(".chart-summary");
    if (!limit || !history) {
      drawing.replaceChildren(svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
      box.querySelector(".y-top").textContent = "";
      caption.textContent = "no rate limit known for this provider";
      drawing.setAttribute("aria-label", "Rate-limit usage: no rate limit known for this provider");
      figure.dataset.points = "0";
      return;
    }
    const points = history.points;
    const n = Math.max(1, points.length);
    const peaks = points.map((p) => p.peak_percentage);
    const known = peaks.filter((v) => v !== null);
    const top = Math.max(100, ...known) * 1.05;
    const y = (v) => H - (v / top) * (H - 4);
    const bars = points
      .map((p, i) => {
        if (p.peak_percentage === null) return null;
        const height = Math.max(1, H - y(p.peak_percentage));
        const kind = p.blocked ? "blocked" : p.peak_percentage >= 90 ? "critical" : p.peak_percentage >= 80 ? "warning" : "ok";
        return svg("rect", { class: `use ${kind}`, x: ((i / n) * W).toFixed(1), y: (H - height).toFixed(1), width: (W / n).toFixed(2), height: height.toFixed(1) });
      })
      .filter(Boolean);
    drawing.replaceChildren(
      svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
      ...bars,
      svg("line", { class: "limit", x1: 0, y1: y(100), x2: W, y2: y(100) }),
    );
    box.querySelector(".y-top").textContent = "100%";
    const per = (limit.limit_type || "").replace("per_", "per ").replace("_", " ");
    const parts = [`now ${limit.current_usage} of ${limit.limit_value} ${per} (${Math.round(limit.percentage)}%)`];
    const blocked = points.filter((p) => p.blocked).length;
    if (known.length) parts.push(`highest ${Math.round(Math.max(...known))}%`);
    else parts.push("no change reported in 7 days (one is recorded when usage crosses 50, 80, 90 or 100%)");
    if (blocked) parts.push(`blocked in ${count(blocked, "hour")}`);
    const summary = parts.join(" · ");
    caption.textContent = summary;
    drawing.setAttribute("aria-label", `Rate-limit usage per hour over the last 7 days: ${summary}`);
    figure.dataset.points = String(known.length);
  }

  // ---- last probes and facts ----------------------------------------------------------

  function renderProbes(rows) {
    const body = $("probes").querySelector("tbody");
    body.replaceChildren(
      ...rows.map((row) => {
        const line = el("tr");
        line.dataset.outcome = row.status;
        const when = el("td", "when", stamp(row.timestamp));
        when.title = row.timestamp;
        const outcome = el("td", "outcome", row.status.replace("_", " "));
        const kind = el("td", "error-kind", row.error_type || "–");
        if (row.error_message) kind.title = row.error_message;
        line.append(when, outcome, kind, el("td", "http", row.http_status ?? "–"), el("td", "latency", ms(row.response_time_ms)));
        return line;
      }),
    );
    $("no-probes").hidden = rows.length > 0;
  }

  function fact(list, term, text, key) {
    const row = el("div");
    row.dataset.fact = key;
    row.append(el("dt", null, term), el("dd", null, text));
    list.append(row);
  }

  function signed(value) {
    if (value === null || value === undefined) return "–";
    const fixed = Number(value).toFixed(2);
    return Number(fixed) > 0 ? `+${fixed}%` : `${fixed}%`;
  }

  function renderFacts(view, chain, pair) {
    const list = $("facts");
    list.replaceChildren();
    const certificate = view.certificate;
    if (certificate) {
      const days = certificate.days_left;
      const left = days < 0 ? "expired" : `${Math.floor(days)} days left`;
      fact(list, "TLS certificate", `expires ${certificate.expires_at.slice(0, 10)} (${left})`, "certificate");
    }
    if (chain) {
      const node = chain.nodes.find((n) => n.provider === NAME);
      const behind = node.lag === null ? "lag unknown" : `${count(node.lag, "block")} behind${node.lag_seconds === null ? "" : ` (${Math.round(node.lag_seconds)} s)`}`;
      const states = node.states.length ? node.states.join(", ").replace(/_/g, " ") : "ok";
      fact(list, `chain ${chain.name}`, `head ${node.head ?? "–"} · best head ${chain.best_head ?? "–"} · ${behind} · ${states}`, "chain");
      if (node.chain_id !== null && node.chain_id !== undefined) {
        const expected = chain.rules && chain.rules.chain_id !== null ? ` (the chain's is ${chain.rules.chain_id})` : "";
        fact(list, "chain id", `${node.chain_id}${expected}`, "chain-id");
      }
      if (chain.block_rate) fact(list, "block rate", `${Number(chain.block_rate).toFixed(3)} blocks/s`, "block-rate");
    }
    if (pair) {
      const source = pair.sources.find((s) => s.provider === NAME);
      const states = source.states.length ? source.states.join(", ").replace(/_/g, " ") : "ok";
      const median = pair.median === null ? `no median (${pair.median_note || "too few sources"})` : `median ${pair.median}`;
      fact(list, `quote ${pair.name}`, `price ${source.price ?? "–"} · ${median} · ${signed(source.deviation_percent)} · ${states}`, "quote");
    }
    for (const [judgement, details] of Object.entries(view.judgements || {})) {
      fact(list, judgement.replace(/_/g, " "), details, `judgement-${judgement}`);
    }
    for (const [observed, seen] of Object.entries(view.observations || {})) {
      fact(list, `observed ${observed}`, `${seen.value} at ${stamp(seen.at)}`, `observation-${observed}`);
    }
    $("no-facts").hidden = list.children.length > 0;
  }

  // ---- start ----------------------------------------------------------------------

  $("token-button").addEventListener("click", () => {
    const given = window.prompt("This server needs its API token to read.\nAPI token (the value of the server's CRYPTOMON_API_TOKEN):");
    if (!given || !given.trim()) return;
    state.token = given.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    state.needsToken = false;
    load();
  });
  wireUptimeBar();
  $("provider-name").textContent = NAME || "–";
  load();
  state.timer = setInterval(() => {
    if (!document.hidden && !state.unknown) load();
  }, REFRESH_MS);
})();

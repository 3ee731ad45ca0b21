// The public status page: the server renders it whole; this updates it in place from
// /status/data.json every few seconds, so a page left open follows the services.
(function () {
  "use strict";
  const EVERY_MS = 10000;
  let shownIncidents = null;

  function apply(status) {
    const overall = document.getElementById("overall");
    overall.dataset.state = status.overall;
    overall.textContent = status.overall_label;
    for (const provider of status.providers) {
      for (const row of document.querySelectorAll(".provider")) {
        if (row.dataset.provider !== provider.name) continue;
        row.dataset.state = provider.state;
        row.querySelector(".state").textContent = provider.label;
      }
    }
    // Rendered by the server as the page is (escaped): put in place when it changed.
    if (status.incidents_html !== shownIncidents) {
      document.getElementById("incidents").innerHTML = status.incidents_html;
      shownIncidents = status.incidents_html;
    }
    const updated = document.getElementById("updated");
    updated.dateTime = status.updated_at;
    updated.textContent = status.updated_at;
  }

  async function refresh() {
    try {
      const response = await fetch("/status/data.json", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) apply(await response.json());
    } catch (error) {
      // Offline for a moment: the page keeps what it shows and asks again.
    }
  }

  document.documentElement.dataset.live = "true";
  setInterval(refresh, EVERY_MS);
  refresh();
})();

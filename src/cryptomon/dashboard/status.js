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
        placeRegions(row, provider);
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

  // The region strip as the server renders it: a chip per region, its name and the word
  // for its state; in place when the regions are the same ones, else built again.
  function placeRegions(row, provider) {
    const regions = provider.regions || [];
    let strip = row.querySelector(".regions");
    const names = regions.map((region) => region.name).join("\n");
    const shown = strip ? [...strip.children].map((chip) => chip.dataset.region).join("\n") : null;
    if (!regions.length) {
      if (strip) strip.remove();
      return;
    }
    if (shown !== names) {
      const made = document.createElement("ul");
      made.className = "regions";
      made.setAttribute("aria-label", `${provider.name} by region`);
      for (const region of regions) {
        const chip = document.createElement("li");
        chip.className = "region";
        chip.dataset.region = region.name;
        const name = document.createElement("span");
        name.className = "region-name";
        name.textContent = region.name;
        const word = document.createElement("span");
        word.className = "region-state";
        chip.append(name, " ", word);
        made.append(chip);
      }
      if (strip) strip.replaceWith(made);
      else row.insertBefore(made, row.querySelector(".history"));
      strip = made;
    }
    regions.forEach((region, index) => {
      const chip = strip.children[index];
      chip.dataset.state = region.state;
      chip.querySelector(".region-state").textContent = region.label;
    });
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

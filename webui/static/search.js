// The service's search page: POST the chosen image to /api/search and show the hits.
"use strict";
(function () {
  const form = document.getElementById("search-form");
  const errorBox = document.getElementById("error");
  const results = document.getElementById("results");
  const button = form.querySelector('button[type="submit"]');
  const thumb = Number(form.dataset.thumb);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    hashveil.showError(errorBox, "");
    const data = new FormData(form);
    const file = data.get("image");
    if (!file || !file.size) { hashveil.showError(errorBox, "Choose an image to search with."); return; }
    if (!data.get("k")) data.delete("k");
    button.disabled = true;
    button.textContent = "Searching…";
    try {
      const body = await hashveil.fetchJSON(form.action, { method: "POST", body: data });
      document.getElementById("query-code").textContent = body.code;
      document.getElementById("result-count").textContent = body.count;
      document.getElementById("result-radius").textContent = body.radius;
      hashveil.renderHits(document.getElementById("hits"), body.results,
        (hit) => hit.image_url + "?size=" + thumb);
      document.getElementById("no-hits").hidden = body.count > 0;
      results.hidden = false;
    } catch (e) {
      results.hidden = true;
      hashveil.showError(errorBox, "The search failed: " + e.message);
    } finally {
      button.disabled = false;
      button.textContent = "Search";
    }
  });
})();

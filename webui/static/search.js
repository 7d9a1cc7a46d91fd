// The service's search page: POST the chosen image to /api/search, show the result's size, the label
// its items vote for and one page of hits; further pages are fetched by the answer's code.
"use strict";
(function () {
  const form = document.getElementById("search-form");
  const errorBox = document.getElementById("error");
  const results = document.getElementById("results");
  const button = form.querySelector('button[type="submit"]');
  const prev = document.getElementById("prev-page");
  const next = document.getElementById("next-page");
  const thumb = Number(form.dataset.thumb);
  let query = null; // {code, radius, k} of the result shown

  // The label with the most votes, ties broken alphabetically (retrieval.core.votes.majority_of).
  function majority(votes) {
    let best = null;
    Object.keys(votes).sort().forEach((name) => { if (best === null || votes[name] > votes[best]) best = name; });
    return best;
  }

  function show(body) {
    query = { code: body.code, radius: body.radius, k: body.k };
    const first = body.results.length ? body.offset + 1 : 0;
    const last = body.offset + body.results.length;
    document.getElementById("query-code").textContent = body.code;
    document.getElementById("result-count").textContent = body.count;
    document.getElementById("result-radius").textContent = body.radius;
    const label = majority(body.label_votes);
    document.getElementById("result-label").textContent = label === null ? "none" : label;
    document.getElementById("result-votes").textContent = label === null ? "nothing retrieved"
      : body.label_votes[label] + " of " + body.count + " items carry it";
    document.getElementById("page-range").textContent = body.count
      ? "Results " + first + " to " + last + " of " + body.count : "";
    prev.hidden = body.offset === 0;
    next.hidden = last >= body.count;
    prev.dataset.offset = Math.max(0, body.offset - body.limit);
    next.dataset.offset = last;
    hashveil.renderHits(document.getElementById("hits"), body.results,
      (hit) => hit.image_url + "?size=" + thumb);
    document.getElementById("no-hits").hidden = body.count > 0;
    results.hidden = false;
  }

  async function run(busy, request) {
    hashveil.showError(errorBox, "");
    busy.disabled = true;
    try {
      show(await request());
    } catch (e) {
      results.hidden = true;
      hashveil.showError(errorBox, "The search failed: " + e.message);
    } finally {
      busy.disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const file = data.get("image");
    if (!file || !file.size) { hashveil.showError(errorBox, "Choose an image to search with."); return; }
    if (!data.get("k")) data.delete("k");
    button.textContent = "Searching…";
    run(button, () => hashveil.fetchJSON(form.action, { method: "POST", body: data }))
      .finally(() => { button.textContent = "Search"; });
  });

  // another page of the same result: a code query, so the image is not sent again
  [prev, next].forEach((link) => link.addEventListener("click", () => {
    const body = Object.assign({}, query, { offset: Number(link.dataset.offset) });
    if (body.k === null) delete body.k;
    run(link, () => hashveil.fetchJSON(form.action, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    }));
  }));
})();

// Shared by hashveil's pages: drop zones for file inputs, error messages, result grids.
// Plain DOM code, no build step; text goes in with textContent, never as HTML.
"use strict";
window.hashveil = (function () {
  function setupDropzone(zone) {
    const input = zone.querySelector('input[type="file"]');
    const preview = zone.querySelector("img.preview");
    function show() {
      const file = input.files && input.files[0];
      if (!preview) return;
      if (!file) { preview.hidden = true; preview.removeAttribute("src"); return; }
      preview.src = URL.createObjectURL(file);
      preview.alt = "Preview of " + file.name;
      preview.hidden = false;
    }
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (ev) => {
      ev.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (!input.disabled && ev.dataTransfer && ev.dataTransfer.files.length) {
        input.files = ev.dataTransfer.files;
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    input.addEventListener("change", show);
    if (preview) preview.addEventListener("error", () => { preview.hidden = true; });
  }

  function showError(box, message) {
    box.textContent = message || "";
    box.hidden = !message;
    if (message) box.focus();
  }

  // A JSON answer, or an Error carrying the server's {"error": ...} message.
  async function fetchJSON(url, options) {
    let response;
    try {
      response = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    } catch (e) {
      throw new Error("Cannot reach " + url + ": " + e.message);
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const why = body && body.error ? body.error : response.status + " " + response.statusText;
      throw new Error(why);
    }
    return body;
  }

  // hits: [{id, distance, labels}], thumbUrl(hit) -> src
  function renderHits(list, hits, thumbUrl) {
    list.replaceChildren();
    hits.forEach((hit) => {
      const li = document.createElement("li");
      li.dataset.id = hit.id;
      li.dataset.labels = hit.labels.join("|");
      li.dataset.distance = hit.distance;
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = thumbUrl(hit);
      img.width = 96; img.height = 96; img.loading = "lazy";
      const labels = hit.labels.length ? hit.labels.join(", ") : "no label";
      img.alt = "Result " + hit.id + ", Hamming distance " + hit.distance + ", labels: " + labels;
      const cap = document.createElement("figcaption");
      const d = document.createElement("span");
      d.className = "dist"; d.textContent = "d = " + hit.distance;
      const l = document.createElement("span");
      l.className = "labels"; l.textContent = labels;
      cap.append(d, document.createElement("br"), l, document.createElement("br"), "#" + hit.id);
      fig.append(img, cap);
      li.append(fig);
      list.append(li);
    });
  }

  document.querySelectorAll("[data-dropzone]").forEach(setupDropzone);
  return { showError, fetchJSON, renderHits };
})();

// The privacy client's page: start a protection job here, poll it, draw the result, then send
// only the protected image (the server sees nothing else).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("protect-form");
  const errorBox = $("error");
  const POLL_MS = 250;
  let current = null;  // the finished job's status

  function syncMode() {
    const mode = form.querySelector('input[name="mode"]:checked').value;
    const carrier = mode === "carrier";
    $("private-zone").hidden = !carrier;
    $("private").disabled = !carrier;
    $("private").required = carrier;
    $("target-field").hidden = mode !== "semantic";
    $("target_label").disabled = mode !== "semantic";
    $("image-label").textContent = carrier ? "Carrier image (protected, then sent)" : "Image to protect";
  }
  form.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", syncMode));
  syncMode();

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    hashveil.showError(errorBox, "");
    const button = $("protect-button");
    button.disabled = true;
    $("outcome").hidden = true;
    $("results").hidden = true;
    $("progress").hidden = false;
    $("progress-text").textContent = "Starting…";
    try {
      const started = await hashveil.fetchJSON(form.action, { method: "POST", body: new FormData(form) });
      let status;
      for (;;) {
        status = await hashveil.fetchJSON(started.status_url);
        $("progress-text").textContent = "Running: " + status.phase + " (" + status.elapsed_s.toFixed(1) + " s)";
        if (status.trace.length > 0) {  // the convergence curve, live
          drawCurve($("live-curve"), status.trace);
          $("live-curve").hidden = false;
        }
        if (status.state === "done" || status.state === "failed") break;
        await sleep(POLL_MS);
      }
      if (status.state === "failed") throw new Error(status.error);
      current = status;
      showOutcome(status);
    } catch (e) {
      hashveil.showError(errorBox, "The protection failed: " + e.message);
    } finally {
      $("progress").hidden = true;
      $("live-curve").hidden = true;
      button.disabled = false;
    }
  });

  function showOutcome(status) {
    const r = status.result;
    for (const kind of ["original", "protected", "perturbation", "private"]) {
      const img = $("img-" + kind);
      if (status.images[kind]) img.src = status.images[kind];
    }
    $("fig-private").hidden = !status.images.private;
    $("gain").textContent = r.gain;
    $("m-psnr").textContent = r.psnr_db.toFixed(2);
    $("m-linf").textContent = r.linf_255;
    $("m-iterations").textContent = r.iterations + " of " + r.steps;
    $("m-distance").textContent = r.distance + (r.reached ? " (reached)" : "");
    $("m-target").textContent = r.target_label ? "label " + r.target_label : status.mode;
    $("m-randomness").textContent = r.randomness === "seed" ? "a fixed seed (repeatable, predictable)" : "fresh OS entropy";
    $("original-code").textContent = r.original_code;
    $("original-label").textContent = r.original_likely_label || "none";
    $("protected-code").textContent = r.code;
    $("protected-label").textContent = r.protected_likely_label || "none";
    $("send-bytes").textContent = r.sent_bytes;
    const kb = (n) => (n / 1000).toFixed(n < 10000 ? 1 : 0) + " KB";
    $("m-file").textContent = r.format.toUpperCase() + (r.quality ? " q" + r.quality : "") + ", " +
      kb(r.sent_bytes) + " (your file: " + kb(r.original_bytes) + ")";
    $("m-file-check").textContent = r.file_at_target ? "at the target" : r.distance === 0 ?
      "NOT at the target after encoding: Hamming " + r.file_distance + " (PNG keeps it exactly)" :
      "Hamming " + r.file_distance + " to the target (" + r.distance + " before encoding)";
    showExposure(status.mode, r.server_views);
    drawCurve($("curve"), r.trace);
    $("outcome").hidden = false;
    $("outcome-title").scrollIntoView({ block: "start" });
  }

  // Before sending: what the server's model infers after each re-encoding (computed here), and the
  // benchmark's rows for this mode (rendered by the page, one set per mode).
  function showExposure(mode, views) {
    const cell = (text, cls) => {
      const td = document.createElement("td");
      td.textContent = text || "none";
      if (cls) td.className = cls;
      return td;
    };
    $("server-views").tBodies[0].replaceChildren(...views.map((v) => {
      const tr = document.createElement("tr");
      tr.dataset.view = v.view;
      tr.append(cell(v.description), cell(v.original), cell(v.protected, v.protected === v.original ? "inferred" : ""));
      return tr;
    }));
    const ladder = $("ladder-section");
    if (!ladder) return;
    $("ladder-mode").textContent = mode;
    ladder.querySelectorAll("[data-mode]").forEach((el) => { el.hidden = el.dataset.mode !== mode; });
  }

  // Hamming distance per iteration as an inline SVG line chart.
  function drawCurve(box, trace) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 600, H = 220, L = 44, R = 12, T = 12, B = 36;
    const n = Math.max(trace.length - 1, 1);
    const ymax = Math.max(1, ...trace);
    const x = (i) => L + (W - L - R) * i / n;
    const y = (d) => T + (H - T - B) * (1 - d / ymax);
    const el = (name, attrs, text) => {
      const e = document.createElementNS(NS, name);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      return e;
    };
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", id: box.id + "-svg",
      "aria-label": "Hamming distance to the target fell from " + trace[0] + " to " + trace[trace.length - 1] +
        " in " + (trace.length - 1) + " iterations" });
    svg.append(el("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#888" }));
    svg.append(el("line", { x1: L, y1: T, x2: L, y2: y(0), stroke: "#888" }));
    for (const d of [0, Math.round(ymax / 2), ymax]) {
      svg.append(el("text", { x: L - 6, y: y(d) + 4, "text-anchor": "end", "font-size": 12 }, String(d)));
    }
    svg.append(el("text", { x: L, y: H - 8, "font-size": 12 }, "0"));
    svg.append(el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 12 }, String(trace.length - 1)));
    svg.append(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "font-size": 12 }, "iteration"));
    const points = trace.map((d, i) => x(i).toFixed(1) + "," + y(d).toFixed(1)).join(" ");
    svg.append(el("polyline", { points: trace.length > 1 ? points : points + " " + x(1) + "," + y(trace[0]),
      fill: "none", stroke: "#1f5fbf", "stroke-width": 2.5, "data-points": trace.length }));
    box.replaceChildren(svg);
  }

  $("send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    hashveil.showError(errorBox, "");
    const button = $("send-button");
    button.disabled = true;
    try {
      const data = new FormData($("send-form"));
      if (!data.get("k")) data.delete("k");
      const body = await hashveil.fetchJSON(current.send_url, { method: "POST", body: data });
      $("result-count").textContent = body.count +
        (body.results.length < body.count ? " (the nearest " + body.results.length + " shown)" : "");
      $("result-label").textContent = body.inferred_label || "none (nothing retrieved)";
      hashveil.renderHits($("hits"), body.results, (hit) => hit.thumb_url);
      $("results").hidden = false;
      $("results-title").scrollIntoView({ block: "start" });
    } catch (e) {
      hashveil.showError(errorBox, "Sending failed: " + e.message);
    } finally {
      button.disabled = false;
    }
  });
})();

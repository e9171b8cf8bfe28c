// Review queue: keyboard shortcuts, decisions sent as JSON with the session's CSRF token, zoom.
// Keys: a approve, r reject, s needs another look, u undo, j/k next/previous.
(function () {
  "use strict";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : null;
  const items = () => Array.from(document.querySelectorAll("article.item"));
  const toast = document.getElementById("toast");
  const leftCount = document.getElementById("left-count");
  const undoStack = []; // frame ids decided on this page, newest last
  let current = null;

  const LABELS = { approved: "approved", rejected: "rejected", needs_look: "needs another look" };

  function say(msg, isError) {
    if (!toast) return;
    toast.textContent = msg;
    toast.className = "toast show" + (isError ? " error" : "");
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { toast.className = "toast"; }, 4000);
  }

  function select(el, scroll) {
    if (!el) return;
    if (current) current.classList.remove("selected");
    current = el;
    el.classList.add("selected");
    if (scroll !== false) {
      el.scrollIntoView({ block: "start", behavior: "auto" });
      el.focus({ preventScroll: true });
    }
  }

  function move(step) {
    const all = items();
    if (!all.length) return;
    const i = current ? all.indexOf(current) : -1;
    const next = all[Math.min(all.length - 1, Math.max(0, i + step))];
    select(next);
  }

  function showDecision(article, decision) {
    article.classList.remove("decided-approved", "decided-rejected", "decided-needs_look");
    const status = article.querySelector('[data-role="status"]');
    if (decision) {
      article.classList.add("decided-" + decision.decision);
      status.textContent = decision.label + " by " + decision.reviewer + (decision.note ? ": \u201c" + decision.note + "\u201d" : "");
    } else {
      status.textContent = "undecided";
    }
  }

  async function post(url, body) {
    if (!csrf) {
      say("Read-only: sign in to record decisions.", true);
      return null;
    }
    let resp;
    try {
      // the page's filters ride along so the server counts what is left in this view
      resp = await fetch(url + window.location.search, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
        body: JSON.stringify(body || {}),
      });
    } catch (err) {
      say("Could not reach the review server: " + err, true);
      return null;
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      say((data && data.error) || ("request failed with HTTP " + resp.status), true);
      return null;
    }
    if (data && typeof data.left === "number" && leftCount) leftCount.textContent = String(data.left);
    return data;
  }

  async function decide(article, decision) {
    if (!article) return;
    const id = article.dataset.frameId;
    const noteEl = article.querySelector("input.note");
    const data = await post("/api/frames/" + id + "/decision", { decision: decision, note: noteEl ? noteEl.value : "" });
    if (!data) return;
    showDecision(article, data.decision);
    if (noteEl) noteEl.value = "";
    undoStack.push(article);
    say("Frame " + id + ": " + LABELS[decision] + ".");
    const all = items();
    const i = all.indexOf(article);
    if (i >= 0 && i + 1 < all.length) select(all[i + 1]);
  }

  async function undo(article) {
    const target = article || undoStack.pop() || current;
    if (!target) return;
    const id = target.dataset.frameId;
    const data = await post("/api/frames/" + id + "/undo", {});
    if (!data) return;
    const idx = undoStack.lastIndexOf(target);
    if (idx >= 0) undoStack.splice(idx, 1);
    showDecision(target, data.decision);
    select(target);
    say("Frame " + id + ": undone" + (data.decision ? ", now " + data.decision.label : "") + ".");
  }

  async function bulk(useFilter) {
    const decision = document.getElementById("bulk-decision").value;
    const note = document.getElementById("bulk-note").value;
    const result = document.getElementById("bulk-result");
    let body;
    if (useFilter) {
      if (!window.confirm("Record \u201c" + LABELS[decision] + "\u201d for every frame matching this " +
                          "page's filter, on all pages?")) return;
      body = { decision: decision, note: note, filters: JSON.parse(document.getElementById("bulk").dataset.filters || "{}") };
    } else {
      const ids = items().filter((a) => { const c = a.querySelector("input.pick"); return c && c.checked; })
        .map((a) => Number(a.dataset.frameId));
      if (!ids.length) { say("Tick some frames first (or use the filter).", true); return; }
      body = { decision: decision, note: note, frame_ids: ids };
    }
    const data = await post("/api/bulk", body);
    if (!data) return;
    for (const [id, dec] of Object.entries(data.decisions)) {
      const a = document.getElementById("frame-" + id);
      if (a) showDecision(a, dec);
    }
    if (result) result.textContent = data.count + " frame" + (data.count === 1 ? "" : "s") + ": " + LABELS[decision] + ".";
    say(data.count + " frames: " + LABELS[decision] + ".");
  }

  // Clicks on decision buttons, undo, and zoom.
  document.addEventListener("click", (ev) => {
    const t = ev.target.closest("button, img.zoomable, #zoom");
    if (!t) return;
    const article = t.closest("article.item");
    if (t.matches("button.act")) { select(article, false); decide(article, t.dataset.decision); }
    else if (t.matches("button.undo")) { select(article, false); undo(article); }
    else if (t.id === "bulk-checked") bulk(false);
    else if (t.id === "bulk-filter") bulk(true);
    else if (t.matches("img.zoomable")) openZoom(t);
    else if (t.id === "zoom") {
      const img = document.getElementById("zoom-img");
      if (ev.target === img) img.classList.toggle("actual");
      else closeZoom();
    }
  });

  const selectAll = document.getElementById("select-all");
  if (selectAll) selectAll.addEventListener("change", () => {
    for (const c of document.querySelectorAll("input.pick")) c.checked = selectAll.checked;
  });

  // Select an item when the reviewer clicks into it.
  document.addEventListener("focusin", (ev) => {
    const a = ev.target.closest && ev.target.closest("article.item");
    if (a && a !== current) select(a, false);
  });

  function openZoom(img) {
    const z = document.getElementById("zoom");
    const zi = document.getElementById("zoom-img");
    zi.src = img.src;
    zi.alt = img.alt;
    zi.classList.remove("actual");
    z.hidden = false;
  }
  function closeZoom() {
    const z = document.getElementById("zoom");
    if (z) z.hidden = true;
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || ev.target.isContentEditable) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    const zoomOpen = !document.getElementById("zoom").hidden;
    if (ev.key === "Escape" && zoomOpen) { closeZoom(); return; }
    switch (ev.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "a": decide(current, "approved"); break;
      case "r": decide(current, "rejected"); break;
      case "s": decide(current, "needs_look"); break;
      case "u": undo(null); break;
      default: return;
    }
    ev.preventDefault();
  });

  const first = items()[0];
  if (first) select(first, false);
  document.body.dataset.ready = "1";
})();

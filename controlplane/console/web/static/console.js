// The console's only script: live redraws from /events, countdowns, and
// confirmations. Pages work without it; it only saves reloads.
"use strict";
(function () {
  const body = document.body;
  const main = document.getElementById("main");

  // Countdowns: <time data-countdown datetime="…"> shows the time left.
  function span(ms) {
    const s = Math.floor(Math.abs(ms) / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      const t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      const left = t - now;
      el.textContent = left > 0 ? span(left) + " left" : "overdue by " + span(left);
      el.classList.toggle("urgent", left < 5 * 60 * 1000);
    });
  }
  tick();
  setInterval(tick, 1000);

  // A form with data-confirm asks first.
  document.addEventListener("submit", function (e) {
    const f = e.target;
    const q = f.getAttribute("data-confirm") || (e.submitter && e.submitter.getAttribute("data-confirm"));
    if (q && !window.confirm(q)) e.preventDefault();
  });

  // Live: redraw <main> when a topic this page shows has changed. A page
  // being typed into is left alone until the field loses focus.
  const topics = body.dataset.topics;
  if (!topics || !main || !window.EventSource) return;
  let inFlight = false, again = false, last = 0, timer = null, redraws = 0;
  function busy() {
    const a = document.activeElement;
    if (!a || !main.contains(a)) return false;
    return a.tagName === "TEXTAREA" || a.tagName === "SELECT" || (a.tagName === "INPUT" && a.type !== "submit" && a.type !== "button" && a.type !== "hidden");
  }
  function schedule() {
    if (timer) return;
    const wait = Math.max(0, last + 250 - Date.now());
    timer = setTimeout(function () { timer = null; redraw(); }, wait);
  }
  function redraw() {
    if (inFlight) { again = true; return; }
    if (busy()) { document.activeElement.addEventListener("blur", schedule, { once: true }); return; }
    inFlight = true;
    last = Date.now();
    fetch(location.href, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        if (busy()) {
          // Typing began while the page was fetched: redraw after it.
          document.activeElement.addEventListener("blur", schedule, { once: true });
          return;
        }
        // A <details> the operator opened (reject, silence…) stays open.
        const open = Array.from(main.querySelectorAll("details[open]")).map(function (d) { return d.closest("[id]") && d.closest("[id]").id; });
        main.innerHTML = html;
        open.forEach(function (id) {
          const el = id && document.getElementById(id);
          const d = el && (el.tagName === "DETAILS" ? el : el.querySelector("details"));
          if (d) d.open = true;
        });
        tick();
        redraws++;
        body.dataset.redraws = String(redraws);
      })
      .catch(function () {})
      .finally(function () {
        inFlight = false;
        if (again) { again = false; schedule(); }
      });
  }
  let es = null;
  function connect() {
    es = new EventSource("/events?topics=" + encodeURIComponent(topics));
    es.addEventListener("ready", function () {
      // Changes made while the stream was down are picked up at once.
      if (body.dataset.live === "lost") schedule();
      body.dataset.live = "ready";
    });
    es.addEventListener("changed", schedule);
    es.addEventListener("signout", function () { es.close(); location.href = "/signin"; });
    es.onerror = function () { body.dataset.live = "lost"; };
  }
  connect();
})();

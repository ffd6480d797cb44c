// The status page: renders each view from /events. Every value from the
// server is set as text (textContent), never as markup.
"use strict";
(function () {
  var last = null, skew = 0;
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function bytes(n) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function age(iso) {
    if (!iso) return "-";
    var s = Math.max(0, Math.round((Date.now() + skew - Date.parse(iso)) / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
    return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
  }
  function who(p) { return p ? "pid " + p.pid + "@" + p.host : "-"; }
  function oldest(ws) {
    var o = null;
    ws.forEach(function (w) { if (w.since && (!o || w.since < o)) o = w.since; });
    return o;
  }
  function cell(tr, text, cls) { var td = el("td", text, cls); tr.appendChild(td); return td; }
  function renderLocks(v) {
    var body = $("locks").tBodies[0], rows = document.createDocumentFragment();
    v.locks.forEach(function (l) {
      var tr = el("tr");
      tr.dataset.name = l.name;
      cell(tr, l.name, "name");
      cell(tr, l.state);
      cell(tr, l.holders.length ? l.holders.map(who).join(", ") : "-");
      cell(tr, l.holders.length ? age(l.holders[0].since) : "-").dataset.since = l.holders.length && l.holders[0].since || "";
      cell(tr, l.token, "num");
      cell(tr, l.waiters.length, "num" + (l.waiters.length ? " waiting" : ""));
      cell(tr, l.waiters.length ? age(oldest(l.waiters)) : "-").dataset.since = oldest(l.waiters) || "";
      cell(tr, (l.cmd || []).join(" "), "cmd");
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    $("nolocks").hidden = v.locks.length > 0;
    $("nlocks").textContent = "(" + (v.locks.length + v.more) + ")";
    $("more").hidden = !v.more;
    $("more").textContent = "and " + v.more + " more, not shown";
  }
  function renderDownloads(v) {
    var body = $("downloads").tBodies[0], rows = document.createDocumentFragment(), n = 0;
    v.locks.forEach(function (l) {
      if (!l.download) return;
      n++;
      var tr = el("tr");
      tr.dataset.name = l.name;
      cell(tr, l.name, "name");
      cell(tr, l.holders.map(who).join(", "));
      cell(tr, l.dest || "-", "dest");
      var bar = el("div", null, "bar"), fill = el("div"), pct = l.total > 0 ? Math.min(100, l.done * 100 / l.total) : 0;
      fill.style.width = (l.total > 0 ? pct : 100) + "%";
      if (!(l.total > 0)) fill.style.opacity = "0.35";
      bar.appendChild(fill);
      bar.appendChild(el("span", l.total > 0 ? bytes(l.done) + " of " + bytes(l.total) + " (" + Math.floor(pct) + "%)" : bytes(l.done)));
      cell(tr, null).appendChild(bar);
      cell(tr, l.rate >= 1 ? bytes(Math.round(l.rate)) + "/s" : "-", "num");
      cell(tr, l.waiters.length, "num");
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    $("nodownloads").hidden = n > 0;
    $("ndownloads").textContent = "(" + n + ")";
  }
  function render(v) {
    last = v;
    skew = Date.parse(v.now) - Date.now();
    document.body.dataset.version = v.version;
    $("backend").textContent = v.backend + " backend";
    var down = $("down");
    down.hidden = v.up;
    down.textContent = v.up ? "" : "The " + v.backend + " backend does not answer; the page shows what was last seen. " + (v.error || "");
    $("backend").className = "badge " + (v.up ? "ok" : "bad");
    renderDownloads(v);
    renderLocks(v);
    var c = v.counters;
    $("counters").textContent = "grants " + c.grants + " · releases " + c.releases + " · lost " + c.lost + " · download commits " + c.commits;
    $("updated").textContent = "updated " + new Date(Date.parse(v.now)).toLocaleTimeString();
  }
  function tick() {
    document.querySelectorAll("td[data-since]").forEach(function (td) {
      if (td.dataset.since) td.textContent = age(td.dataset.since);
    });
  }
  var es = new EventSource("events");
  es.onopen = function () { $("conn").textContent = "live"; $("conn").className = "badge ok"; };
  es.onerror = function () { $("conn").textContent = "reconnecting…"; $("conn").className = "badge bad"; };
  es.onmessage = function (m) {
    try { render(JSON.parse(m.data)); } catch (e) { $("conn").textContent = "bad update"; }
  };
  setInterval(tick, 1000);
})();

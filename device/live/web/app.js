// ALANet live feedback page: applies the server's Server-Sent Events to a local copy
// of the store and draws one card per wearer. No framework, no build step.
"use strict";

const WINDOW_S = 60;          // seconds of trace on screen
const TRACE_MAX = 600;        // samples kept per wearer
const STALE_S = 5;            // no state for this long: the card says so

const S = {
  link: { state: "connecting", detail: "" },
  broker: "",
  gateways: {},               // id -> gateway view
  wearers: {},                // "gw/wearer" -> wearer view (+ trace)
  skew: 0,                    // browser clock - server clock (s)
  stream: "connecting",       // the /events connection itself
  sound: false,
  audio: null,
  pick: { gateway: "", wearer: "" },
};

const $ = (sel, root = document) => root.querySelector(sel);
const key = (w) => `${w.gateway}/${w.wearer}`;
const now = () => Date.now() / 1000 - S.skew;
const fmt = (p) => (p === null || p === undefined ? "–" : p.toFixed(2));

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  S.pick.gateway = h.get("gw") || "";
  S.pick.wearer = h.get("w") || "";
}

function writeHash() {
  const h = new URLSearchParams();
  if (S.pick.gateway) h.set("gw", S.pick.gateway);
  if (S.pick.wearer) h.set("w", S.pick.wearer);
  history.replaceState(null, "", h.toString() ? `#${h}` : location.pathname);
}

// ---- events from the server ----
function apply(ev) {
  if (typeof ev.now === "number") S.skew = Date.now() / 1000 - ev.now;
  switch (ev.type) {
    case "snapshot":
      S.link = ev.link; S.broker = ev.broker || "";
      S.gateways = ev.gateways || {};
      S.wearers = {};
      for (const w of ev.wearers || []) { S.wearers[key(w)] = w; }
      break;
    case "link":
      S.link = ev.link;
      break;
    case "gateway": {
      const g = ev.gateway;
      S.gateways[g.gateway] = g;
      for (const name of Object.keys((g.status && g.status.wearers) || {})) {  // wearers known before any data
        const k = `${g.gateway}/${name}`;
        if (!S.wearers[k]) S.wearers[k] = { gateway: g.gateway, wearer: name, task: null, samples: 0, probability: null,
                                            pain: null, active: [], recent: [], last_state: null, trace: [] };
      }
      break;
    }
    case "wearer": {
      const old = S.wearers[key(ev.wearer)];
      const w = Object.assign(ev.wearer, { trace: old ? old.trace : [] });
      if (ev.sample) { w.trace.push(ev.sample); if (w.trace.length > TRACE_MAX) w.trace.shift(); }
      S.wearers[key(w)] = w;
      ensureGateway(w.gateway);
      break;
    }
    case "alert": {
      const old = S.wearers[key(ev.wearer)];
      const w = Object.assign(ev.wearer, { trace: old ? old.trace : [] });
      S.wearers[key(w)] = w;
      ensureGateway(w.gateway);
      if (ev.alert && (ev.alert.state === "raised" || (ev.alert.type === "pain" && ev.alert.level > 0))) beep();
      break;
    }
  }
  render();
}

function ensureGateway(id) {
  if (!S.gateways[id]) S.gateways[id] = { gateway: id, online: null, status: null, threshold: 0.6, model_id: null };
}

function connect() {
  const es = new EventSource("events");
  es.onopen = () => { S.stream = "open"; renderBanner(); };
  es.onmessage = (m) => { S.stream = "open"; apply(JSON.parse(m.data)); };
  es.onerror = () => { S.stream = "lost"; renderBanner(); }; // EventSource reconnects by itself
}

// ---- sound (WebAudio beep, off until the user turns it on) ----
function beep() {
  if (!S.sound || !S.audio) return;
  const ctx = S.audio, t = ctx.currentTime;
  for (const [i, f] of [[0, 880], [1, 660]]) {
    const o = ctx.createOscillator(), g = ctx.createGain();
    o.frequency.value = f; o.type = "sine";
    g.gain.setValueAtTime(0.0001, t + i * 0.25);
    g.gain.exponentialRampToValueAtTime(0.3, t + i * 0.25 + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.25 + 0.22);
    o.connect(g).connect(ctx.destination);
    o.start(t + i * 0.25); o.stop(t + i * 0.25 + 0.25);
  }
}

function toggleSound() {
  S.sound = !S.sound;
  if (S.sound && !S.audio) {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (AC) S.audio = new AC();
  }
  if (S.audio && S.audio.state === "suspended") S.audio.resume();
  const b = $("#sound");
  b.setAttribute("aria-pressed", String(S.sound));
  b.textContent = S.sound ? "Sound: on" : "Sound: off";
  if (S.sound) beep();
}

// ---- rendering ----
function renderBanner() {
  const b = $("#banner");
  const link = $("#link");
  let msg = "";
  if (S.stream === "lost") msg = "Connection to the live server lost — reconnecting…";
  else if (S.link.state !== "connected") msg = `MQTT broker ${S.broker}: ${S.link.state}${S.link.detail ? " — " + S.link.detail : ""}`;
  b.hidden = !msg; b.textContent = msg;
  link.dataset.state = S.stream === "lost" ? "lost" : S.link.state;
  link.textContent = S.stream === "lost" ? "server lost" : `broker ${S.link.state}`;
  link.className = "pill " + (S.stream !== "lost" && S.link.state === "connected" ? "pill-ok" : "pill-bad");
}

function fillPicker(sel, values, current) {
  const want = ["", ...values];
  const have = [...sel.options].map((o) => o.value);
  if (want.join("\u0000") !== have.join("\u0000")) {
    sel.replaceChildren(...want.map((v) => new Option(v || "all", v)));
  }
  sel.value = want.includes(current) ? current : "";
}

function visibleWearers() {
  return Object.values(S.wearers)
    .filter((w) => !S.pick.gateway || w.gateway === S.pick.gateway)
    .filter((w) => !S.pick.wearer || w.wearer === S.pick.wearer)
    .sort((a, b) => key(a).localeCompare(key(b)));
}

function render() {
  renderBanner();
  const gws = Object.keys(S.gateways).sort();
  fillPicker($("#pick-gateway"), gws, S.pick.gateway);
  const ws = [...new Set(Object.values(S.wearers)
    .filter((w) => !S.pick.gateway || w.gateway === S.pick.gateway).map((w) => w.wearer))].sort();
  fillPicker($("#pick-wearer"), ws, S.pick.wearer);

  // gateways
  const gbox = $("#gateways");
  const shownG = gws.filter((g) => !S.pick.gateway || g === S.pick.gateway);
  syncChildren(gbox, shownG, (id) => $("#tpl-gateway").content.firstElementChild.cloneNode(true), (el, id) => {
    const g = S.gateways[id];
    el.dataset.gateway = id;
    $(".gw-name", el).textContent = id;
    const on = $(".gw-online", el);
    on.textContent = g.online === true ? "online" : g.online === false ? "offline" : "status unknown";
    on.className = "pill gw-online " + (g.online === true ? "pill-ok" : g.online === false ? "pill-bad" : "pill-wait");
    const task = g.model && g.model.task;
    $(".gw-model", el).textContent = `model ${g.model_id || "–"}${task ? " (" + task + ")" : ""}` +
      (task === "pain" ? "" : ` · alert threshold ${fmt(g.threshold)}`);
    const c = (g.status && g.status.counters) || {};
    const names = { frames: "frames", crc_errors: "CRC errors", gaps: "gaps", windows: "windows",
                    inference_ms: "inference ms", queue_depth: "alert queue" };
    const dl = $(".counters", el);
    dl.replaceChildren(...Object.entries(names).filter(([k]) => k in c).flatMap(([k, label]) => {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = typeof c[k] === "number" && !Number.isInteger(c[k]) ? c[k].toFixed(2) : String(c[k]);
      dd.dataset.counter = k;
      return [dt, dd];
    }));
  });

  // wearers
  const shown = visibleWearers();
  syncChildren($("#wearers"), shown.map(key), () => $("#tpl-wearer").content.firstElementChild.cloneNode(true),
    (el, k) => fillWearer(el, S.wearers[k]));
  $("#empty").hidden = shown.length > 0 || gws.length > 0;
  document.body.classList.toggle("alerting", shown.some((w) => (w.active || []).length > 0));
}

function syncChildren(box, ids, make, fill) {
  const have = new Map([...box.children].map((el) => [el.dataset.id, el]));
  ids.forEach((id, i) => {
    let el = have.get(id);
    if (!el) { el = make(id); el.dataset.id = id; }
    have.delete(id);
    if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
    fill(el, id);
  });
  for (const el of have.values()) el.remove();
}

function fillWearer(el, w) {
  const g = S.gateways[w.gateway] || {};
  el.dataset.wearer = key(w);
  $(".w-name", el).textContent = w.wearer;
  $(".w-gateway", el).textContent = `on ${w.gateway}${g.online === false ? " (offline)" : ""}`;
  const prob = $(".prob", el);
  prob.textContent = fmt(w.probability);
  $(".fig-prob", el).hidden = w.task === "pain";
  $(".fig-pain", el).hidden = w.task === "protective" && !w.pain;
  const ws = (g.status && g.status.wearers && g.status.wearers[w.wearer]) || null;
  const serial = $(".serial", el);
  serial.textContent = g.online === false ? "gateway offline" : ws && ws.serial ? ws.serial : "–";
  serial.className = "serial " + (g.online !== false && ws && ws.serial === "up" ? "ok"
    : g.online === false || (ws && ws.serial === "down") ? "bad" : "");
  prob.classList.toggle("over", w.probability !== null && w.probability >= (g.threshold ?? 0.6));
  const pain = w.pain || {};
  $(".pain", el).textContent = pain.label || (pain.leading ? `${pain.leading}?` : "–");
  $(".samples", el).textContent = String(w.samples);
  const active = w.active || [];
  const ban = $(".alert-banner", el);
  ban.hidden = active.length === 0;
  ban.textContent = active.map((a) => a.type === "protective"
    ? `⚠ Protective behaviour since ${clock(a.received)} (p ${fmt(a.probability)})`
    : `⚠ Pain: ${a.state} since ${clock(a.received)}`).join(" · ");
  el.classList.toggle("alerting", active.length > 0);
  el.classList.toggle("pain-alert", active.some((a) => a.type === "pain"));
  el.classList.toggle("protective-alert", active.some((a) => a.type === "protective"));
  const bars = $(".painbars", el);
  const probs = pain.probabilities || null;
  bars.hidden = !probs;
  if (probs) {
    bars.replaceChildren(...Object.entries(probs).map(([label, p]) => {
      const row = document.createElement("div"); row.className = "painbar";
      row.innerHTML = `<span></span><meter min="0" max="1"></meter><span></span>`;
      row.children[0].textContent = label; row.children[1].value = p; row.children[2].textContent = fmt(p);
      return row;
    }));
  }
  $(".trace", el).hidden = w.task === "pain";
  const recent = w.recent || [];
  $(".n-recent", el).textContent = String(recent.length);
  $(".recent ol", el).replaceChildren(...recent.map((a) => {
    const li = document.createElement("li");
    li.textContent = `${clock(a.received)} ${a.type} ${a.state} (p ${fmt(a.probability)})`;
    return li;
  }));
  el._w = w;
}

function clock(t) {
  return t ? new Date((t + S.skew) * 1000).toLocaleTimeString() : "–";
}

// The trace and the "last update" age redraw on a timer so the trace scrolls in real time.
function draw() {
  for (const el of document.querySelectorAll("#gateways .gateway")) {
    const g = S.gateways[el.dataset.gateway];
    if (!g) continue;
    const age = g.last_status ? now() - g.last_status : null;
    $(".gw-age", el).textContent = age === null ? "no status yet" : `status ${age < 1 ? "just now" : age.toFixed(0) + " s ago"}`;
  }
  for (const el of document.querySelectorAll("#wearers .wearer")) {
    const w = el._w;
    if (!w) continue;
    const age = w.last_state ? now() - w.last_state : null;
    const a = $(".age", el);
    a.textContent = age === null ? "–" : age < 1 ? "now" : `${age.toFixed(0)} s ago`;
    el.classList.toggle("stale", age === null || age > STALE_S);
    if (w.task !== "pain") drawTrace($(".trace", el), w, (S.gateways[w.gateway] || {}).threshold ?? 0.6);
  }
}

function drawTrace(cv, w, thr) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = cv.clientWidth || 300, cssH = cv.clientHeight || 160;
  if (cv.width !== Math.round(cssW * dpr) || cv.height !== Math.round(cssH * dpr)) {
    cv.width = Math.round(cssW * dpr); cv.height = Math.round(cssH * dpr);
  }
  const ctx = cv.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const css = getComputedStyle(cv);
  const fg = css.getPropertyValue("--trace").trim() || "#1565c0";
  const raw = css.getPropertyValue("--trace-raw").trim() || "#90caf9";
  const grid = css.getPropertyValue("--grid").trim() || "#ccc";
  const alertC = css.getPropertyValue("--alert").trim() || "#c62828";
  const pad = { l: 30, r: 6, t: 6, b: 16 };
  const W = cssW - pad.l - pad.r, H = cssH - pad.t - pad.b;
  const t1 = now(), t0 = t1 - WINDOW_S;
  const X = (t) => pad.l + ((t - t0) / WINDOW_S) * W;
  const Y = (p) => pad.t + (1 - p) * H;
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.font = "10px sans-serif"; ctx.fillStyle = grid; ctx.strokeStyle = grid; ctx.lineWidth = 1;
  for (const p of [0, 0.5, 1]) {
    ctx.beginPath(); ctx.moveTo(pad.l, Y(p)); ctx.lineTo(pad.l + W, Y(p)); ctx.stroke();
    ctx.fillText(p.toFixed(1), 4, Y(p) + 3);
  }
  for (let s = 0; s <= WINDOW_S; s += 15) ctx.fillText(s ? `-${s}s` : "now", X(t1 - s) - 12, cssH - 3);
  // alert threshold
  ctx.strokeStyle = alertC; ctx.setLineDash([6, 4]);
  ctx.beginPath(); ctx.moveTo(pad.l, Y(thr)); ctx.lineTo(pad.l + W, Y(thr)); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = alertC; ctx.fillText(`alert ${thr.toFixed(2)}`, pad.l + W - 56, Y(thr) - 3);
  const pts = (w.trace || []).filter((s) => s[1] !== null && s[0] >= t0 - 2);
  const line = (idx, color, width) => {
    ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
    pts.forEach((s, i) => { const x = X(s[0]), y = Y(Math.max(0, Math.min(1, s[idx]))); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke();
  };
  if (pts.length) {
    line(2, raw, 1);
    line(1, fg, 2.5);
    const last = pts[pts.length - 1];
    ctx.fillStyle = last[1] >= thr ? alertC : fg;
    ctx.beginPath(); ctx.arc(X(last[0]), Y(last[1]), 4, 0, 2 * Math.PI); ctx.fill();
  }
}

function init() {
  readHash();
  $("#pick-gateway").addEventListener("change", (e) => { S.pick.gateway = e.target.value; S.pick.wearer = ""; writeHash(); render(); });
  $("#pick-wearer").addEventListener("change", (e) => { S.pick.wearer = e.target.value; writeHash(); render(); });
  $("#sound").addEventListener("click", toggleSound);
  window.addEventListener("hashchange", () => { readHash(); render(); });
  render();
  connect();
  setInterval(draw, 100);
}

init();

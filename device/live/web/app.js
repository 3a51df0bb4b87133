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
  control: true,              // false: alanet live --read-only
  exercises: [],              // [[id, label, colour]] from the server
  patient: { key: "", cue: false, started: false },
};

const $ = (sel, root = document) => root.querySelector(sel);
const key = (w) => `${w.gateway}/${w.wearer}`;
const now = () => Date.now() / 1000 - S.skew;
const fmt = (p) => (p === null || p === undefined ? "–" : p.toFixed(2));
const exLabel = (id) => (S.exercises.find((e) => e[0] === id) || [id, id || "no exercise"])[1];
const exColour = (id) => (S.exercises.find((e) => e[0] === id) || [0, 0, "#bdbdbd"])[2];
const mmss = (s) => `${Math.floor(Math.max(0, s) / 60)}:${String(Math.floor(Math.max(0, s) % 60)).padStart(2, "0")}`;

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  S.pick.gateway = h.get("gw") || "";
  S.pick.wearer = h.get("w") || "";
  const p = h.get("patient") || "";
  if (p && p !== S.patient.key) { S.patient.key = p; S.patient.started = false; }
  if (!p) S.patient.key = "";
}

function writeHash() {
  const h = new URLSearchParams();
  if (S.pick.gateway) h.set("gw", S.pick.gateway);
  if (S.pick.wearer) h.set("w", S.pick.wearer);
  if (S.patient.key) h.set("patient", S.patient.key);
  history.replaceState(null, "", h.toString() ? `#${h}` : location.pathname);
}

// ---- events from the server ----
function apply(ev) {
  if (typeof ev.now === "number") S.skew = Date.now() / 1000 - ev.now;
  switch (ev.type) {
    case "snapshot":
      S.link = ev.link; S.broker = ev.broker || "";
      S.gateways = ev.gateways || {};
      S.control = ev.control !== false;
      S.exercises = ev.exercises || S.exercises;
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
                                            pain: null, active: [], recent: [], last_state: null, trace: [],
                                            timeline: [], history: [], settings: {} };
      }
      break;
    }
    case "wearer": {
      const w = keepLocal(ev.wearer);
      if (ev.sample) { w.trace.push(ev.sample); if (w.trace.length > TRACE_MAX) w.trace.shift(); }
      if (ev.timeline && ev.timeline.session === w.timeline_session) w.timeline.push(ev.timeline.point);
      break;
    }
    case "alert": {
      keepLocal(ev.wearer);
      if (ev.alert && (ev.alert.state === "raised" || (ev.alert.type === "pain" && ev.alert.level > 0))) beep();
      break;
    }
    case "history": {
      const w = S.wearers[`${ev.gateway}/${ev.wearer}`];
      if (w) w.history = ev.history || [];
      break;
    }
  }
  render();
}

// A wearer update from the server keeps what the page accumulates itself: trace, session timeline, history.
function keepLocal(nw) {
  const old = S.wearers[key(nw)];
  const same = old && old.timeline_session === nw.timeline_session;
  const w = Object.assign(nw, { trace: old ? old.trace : [], timeline: same ? old.timeline : [],
                                history: old ? old.history || [] : [] });
  S.wearers[key(w)] = w;
  ensureGateway(w.gateway);
  return w;
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
  document.body.classList.toggle("read-only", !S.control);
  for (const b of document.querySelectorAll("[data-control]")) b.disabled = !S.control;
  renderPatient();
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
  ban.textContent = active.map((a) => (a.type === "protective"
    ? `⚠ Protective behaviour since ${clock(a.received)} (p ${fmt(a.probability)})`
    : `⚠ Pain: ${a.state} since ${clock(a.received)}`) + (a.exercise ? ` during ${exLabel(a.exercise)}` : "")).join(" · ");
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
  fillSession(el, w, g);
  fillDrove(el, w);
  fillHistory(el, w);
  const recent = w.recent || [];
  $(".n-recent", el).textContent = String(recent.length);
  $(".recent ol", el).replaceChildren(...recent.map((a) => {
    const li = document.createElement("li");
    li.textContent = `${clock(a.received)} ${a.type} ${a.state} (p ${fmt(a.probability)})` +
      (a.exercise ? ` during ${exLabel(a.exercise)}` : "") + (a.attention ? ` — ${describe(a.attention)}` : "");
    return li;
  }));
  el._w = w;
}

// ---- sessions, exercises, what drove it, history ----
const reportUrl = (w, id, ext = "html") =>
  `report/${encodeURIComponent(w.gateway)}/${encodeURIComponent(w.wearer)}/${encodeURIComponent(id)}.${ext}`;

function fillSession(el, w, g) {
  const box = $(".exercises", el);
  if (box.children.length !== S.exercises.length + 1) {
    box.replaceChildren(...[...S.exercises, [null, "none", "#bdbdbd"]].map(([id, label, colour]) => {
      const b = document.createElement("button");
      b.type = "button"; b.className = "ex"; b.dataset.exercise = id || ""; b.dataset.control = "";
      b.style.setProperty("--ex", colour); b.textContent = label;
      return b;
    }));
  }
  for (const b of box.children) {
    const on = (b.dataset.exercise || null) === (w.exercise || null);
    b.setAttribute("aria-pressed", String(on));
    b.disabled = !S.control;
  }
  const sess = w.session || {};
  const src = { page: "set on the page", mqtt: "set over MQTT", wearable: "reported by the wearable" }[sess.exercise_source];
  $(".exercise-note", el).textContent = w.exercise ? `Exercise: ${exLabel(w.exercise)}${src ? " (" + src + ")" : ""}`
    : "No exercise set";
  const active = sess.state === "active";
  el.classList.toggle("in-session", active);
  const tog = $(".session-toggle", el);
  tog.textContent = active ? "Stop session" : "Start session";
  tog.dataset.action = active ? "stop" : "start";
  tog.classList.toggle("stop", active);
  if (!active) $(".session-state", el).textContent = sess.state === "idle" ? "No session" : "";
  const link = $(".report-link", el);
  const id = active ? sess.session : (sess.last && sess.last.session) || null;
  link.hidden = !id;
  if (id) { link.href = reportUrl(w, id); link.textContent = active ? "Report so far" : "Last report"; }
  const tl = w.timeline || [];
  $(".timeline-box", el).hidden = tl.length === 0;
  $(".timeline-note", el).textContent = w.timeline_session ? (active ? w.timeline_session : `${w.timeline_session} (stopped)`) : "";
  const used = [...new Set(tl.map((p) => p[3]))];
  $(".legend", el).replaceChildren(...used.map((ex) => legendItem(exColour(ex), exLabel(ex))));
  const st = w.settings || {};
  const thr = g.threshold ?? 0.6;
  const sens = st.sensitivity ?? thr;
  const slider = $(".sensitivity", el);
  if (document.activeElement !== slider) slider.value = String(sens);
  $(".sensitivity-value", el).textContent = sens.toFixed(2) + (st.sensitivity == null ? " (alert threshold)" : "");
  $(".tone", el).checked = !!st.tone;
}

function legendItem(colour, label) {
  const span = document.createElement("span");
  const i = document.createElement("i"); i.className = "sw"; i.style.background = colour;
  span.append(i, label);
  return span;
}

function describe(att) {
  if (!att) return "";
  const parts = (att.body || []).slice(0, 2).map((p) => p.label || p.part);
  const when = `${Number(att.peak_s || 0).toFixed(1)} s into the window`;
  return parts.length ? `mostly ${parts.join(" and ")}, ${when}` : `peak ${when}`;
}

function fillDrove(el, w) {
  const alert = (w.active || []).find((a) => a.attention);
  const att = alert ? alert.attention : w.attention;
  const p = $(".drove", el);
  p.hidden = !att;
  if (!att) return;
  $(".drove-text", el).textContent = describe(att);
  const prof = att.profile || [];
  const top = Math.max(...prof, 1e-9);
  $(".profile", el).replaceChildren(...prof.map((v) => {
    const bar = document.createElement("i");
    bar.style.height = `${Math.round(4 + 18 * (v / top))}px`;
    return bar;
  }));
}

function fillHistory(el, w) {
  const hist = w.history || [];
  $(".n-history", el).textContent = String(hist.length);
  $(".history-list", el).replaceChildren(...hist.slice().reverse().map((h) => {
    const li = document.createElement("li");
    const when = h.started ? new Date(h.started).toLocaleString() : h.session;
    const what = h.protective_s !== undefined
      ? `protective ${mmss(h.protective_s)} of ${mmss(h.analysed_s || 0)}, ${h.episodes} episode(s)`
      : `mean pain level ${h.pain_mean_level ?? "–"}`;
    const a = document.createElement("a");
    a.href = reportUrl(w, h.session); a.target = "_blank"; a.rel = "noopener"; a.textContent = "report";
    li.append(`${when}: ${what} `, a);
    return li;
  }));
  const used = [...new Set(hist.flatMap((h) => (h.exercises || []).map((e) => e.exercise)))];
  $(".trend-legend", el).replaceChildren(...used.map((ex) => legendItem(exColour(ex), exLabel(ex))),
    ...(hist.some((h) => h.pain_mean_level != null) ? [legendItem("#000", "mean pain level")] : []));
}

function canvasCtx(cv) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = cv.clientWidth || 300, cssH = cv.clientHeight || 120;
  if (cv.width !== Math.round(cssW * dpr) || cv.height !== Math.round(cssH * dpr)) {
    cv.width = Math.round(cssW * dpr); cv.height = Math.round(cssH * dpr);
  }
  const ctx = cv.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const css = getComputedStyle(cv);
  const colour = (name, dflt) => css.getPropertyValue(name).trim() || dflt;
  return { ctx, W: cssW, H: cssH, colour };
}

function drawTimeline(cv, w, thr) {
  const { ctx, W, H, colour } = canvasCtx(cv);
  const pts = w.timeline || [];
  if (!pts.length) return;
  const pain = w.task === "pain";
  const top = pain ? Math.max(1, ((w.pain && w.pain.labels) || [0, 1, 2]).length - 1) : 1;
  const active = w.session && w.session.state === "active" && w.session.session === w.timeline_session;
  const t0 = pts[0][0], t1 = Math.max(active ? now() : pts[pts.length - 1][0], t0 + 1);
  const pad = { l: 30, r: 6, t: 6, b: 26 };
  const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (W - pad.l - pad.r);
  const Y = (v) => pad.t + (1 - v / top) * (H - pad.t - pad.b);
  const alertC = colour("--alert", "#c62828"), grid = colour("--grid", "#ccc");
  ctx.font = "10px sans-serif"; ctx.fillStyle = grid; ctx.strokeStyle = grid; ctx.lineWidth = 1;
  for (const v of pain ? [0, top] : [0, 0.5, 1]) {
    ctx.beginPath(); ctx.moveTo(pad.l, Y(v)); ctx.lineTo(W - pad.r, Y(v)); ctx.stroke();
    ctx.fillText(pain ? String(v) : v.toFixed(1), 4, Y(v) + 3);
  }
  ctx.fillText("0:00", pad.l, H - 2); ctx.fillText(mmss(t1 - t0), W - pad.r - 28, H - 2);
  // episodes: runs of active windows
  ctx.fillStyle = alertC; ctx.globalAlpha = 0.18;
  let start = null;
  pts.forEach((p, i) => {
    if (p[2] && start === null) start = p[0];
    if ((!p[2] || i === pts.length - 1) && start !== null) {
      const end = p[0];
      ctx.fillRect(X(start), pad.t, Math.max(2, X(end) - X(start)), H - pad.t - pad.b);
      start = null;
    }
  });
  ctx.globalAlpha = 1;
  if (!pain) {
    ctx.strokeStyle = alertC; ctx.setLineDash([6, 4]);
    ctx.beginPath(); ctx.moveTo(pad.l, Y(thr)); ctx.lineTo(W - pad.r, Y(thr)); ctx.stroke(); ctx.setLineDash([]);
  }
  ctx.strokeStyle = colour("--trace", "#1565c0"); ctx.lineWidth = 1.6; ctx.beginPath();
  let first = true;
  for (const p of pts) {
    if (p[1] === null || p[1] === undefined) continue;
    const x = X(p[0]), y = Y(Math.max(0, Math.min(top, p[1])));
    if (first) { ctx.moveTo(x, y); first = false; } else ctx.lineTo(x, y);
  }
  ctx.stroke();
  // exercise band
  const yb = H - pad.b + 4;
  let from = 0;  // one rectangle per run of the same exercise (no seams between windows)
  pts.forEach((p, i) => {
    if (i + 1 < pts.length && pts[i + 1][3] === p[3]) return;
    const x0 = X(pts[from][0]), x1 = i + 1 < pts.length ? X(pts[i + 1][0]) : X(t1);
    ctx.fillStyle = exColour(p[3]); ctx.fillRect(x0, yb, Math.max(1, x1 - x0), 8);
    from = i + 1;
  });
}

function drawTrend(cv, w) {
  const { ctx, W, H, colour } = canvasCtx(cv);
  const hist = (w.history || []).slice(-20);
  if (!hist.length) return;
  const pad = { l: 36, r: 30, t: 8, b: 18 };
  const n = hist.length, bw = (W - pad.l - pad.r) / n;
  const mins = hist.map((h) => (h.exercises || []).reduce((a, e) => a + (e.protective_s || 0), 0) / 60);
  const top = Math.max(0.5, ...mins);
  const Y = (m) => pad.t + (1 - m / top) * (H - pad.t - pad.b);
  ctx.font = "10px sans-serif"; ctx.fillStyle = colour("--grid", "#999");
  ctx.fillText(`${top.toFixed(1)} min`, 0, pad.t + 8); ctx.fillText("0", 24, Y(0));
  hist.forEach((h, i) => {
    let base = 0;
    for (const e of h.exercises || []) {
      const m = (e.protective_s || 0) / 60;
      if (m <= 0) continue;
      ctx.fillStyle = exColour(e.exercise);
      ctx.fillRect(pad.l + i * bw + bw * 0.15, Y(base + m), bw * 0.7, Y(base) - Y(base + m));
      base += m;
    }
    ctx.fillStyle = colour("--grid", "#999");
    if (n <= 12 || i % 2 === 0) ctx.fillText(String(i + 1), pad.l + i * bw + bw * 0.4, H - 4);
  });
  const pain = hist.map((h) => h.pain_mean_level);
  if (pain.some((v) => v !== null && v !== undefined)) {  // pain-level estimate on its own axis (0..2)
    const top2 = Math.max(2, ...pain.filter((v) => v != null));
    const Y2 = (v) => pad.t + (1 - v / top2) * (H - pad.t - pad.b);
    ctx.strokeStyle = colour("--fg", "#000"); ctx.lineWidth = 2; ctx.beginPath();
    let first = true;
    pain.forEach((v, i) => {
      if (v == null) return;
      const x = pad.l + (i + 0.5) * bw;
      if (first) { ctx.moveTo(x, Y2(v)); first = false; } else ctx.lineTo(x, Y2(v));
    });
    ctx.stroke();
    ctx.fillStyle = colour("--fg", "#000"); ctx.fillText(`pain ${top2}`, W - pad.r + 2, pad.t + 8);
  }
}

// ---- commands (exercise, session) and settings, posted to the live server ----
async function post(path, body) {
  try {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) flash(`${r.status}: ${(await r.text()).trim()}`);
    return r.ok;
  } catch (e) {
    flash(`cannot reach the live server (${e})`);
    return false;
  }
}

function flash(msg) {
  const b = $("#banner");
  b.hidden = false; b.textContent = msg;
  clearTimeout(flash.t); flash.t = setTimeout(renderBanner, 5000);
}

function cardWearer(target) {
  const card = target.closest(".wearer");
  return card ? S.wearers[card.dataset.wearer] : null;
}

function onCardClick(e) {
  const w = cardWearer(e.target);
  if (!w) return;
  const ex = e.target.closest("button.ex");
  if (ex) post("api/command", { gateway: w.gateway, wearer: w.wearer, action: "exercise", exercise: ex.dataset.exercise || null });
  const tog = e.target.closest("button.session-toggle");
  if (tog) post("api/command", { gateway: w.gateway, wearer: w.wearer, action: tog.dataset.action });
  if (e.target.closest("button.patient-open")) openPatient(key(w), true);
}

function onCardChange(e) {
  const w = cardWearer(e.target);
  if (!w || !(e.target.matches(".sensitivity") || e.target.matches(".tone"))) return;
  const card = e.target.closest(".wearer");
  post("api/settings", { gateway: w.gateway, wearer: w.wearer, sensitivity: Number($(".sensitivity", card).value),
                         tone: $(".tone", card).checked });
}

// ---- patient view: full screen, a calm colour cue, an optional soft tone ----
function openPatient(k, gesture) {
  S.patient.key = k; S.patient.cue = false; S.patient.started = !!gesture;
  writeHash();
  if (gesture) enterPatient();
  renderPatient();
}

function enterPatient() {
  const el = $("#patient");
  if (el.requestFullscreen && !document.fullscreenElement) el.requestFullscreen().catch(() => {});
  const AC = window.AudioContext || window.webkitAudioContext;
  if (AC && !S.audio) S.audio = new AC();
  if (S.audio && S.audio.state === "suspended") S.audio.resume();
}

function startPatient(e) {  // a tablet that opened #patient=… directly: the first tap allows full screen and sound
  if (e.target.closest("#patient-close") || S.patient.started) return;
  S.patient.started = true;
  enterPatient();
  renderPatient();
}

function closePatient() {
  S.patient.key = "";
  if (document.fullscreenElement && document.exitFullscreen) document.exitFullscreen().catch(() => {});
  writeHash();
  renderPatient();
}

function patientCue(w) {
  const g = S.gateways[w.gateway] || {};
  const st = w.settings || {};
  if (w.task === "pain") return (w.active || []).some((a) => a.type === "pain");
  const thr = st.sensitivity ?? g.threshold ?? 0.6;
  return (w.probability !== null && w.probability !== undefined && w.probability >= thr) ||
    (w.active || []).some((a) => a.type === "protective");
}

function renderPatient() {
  const el = $("#patient");
  const w = S.patient.key ? S.wearers[S.patient.key] : null;
  el.hidden = !S.patient.key;
  document.body.classList.toggle("patient-mode", !!S.patient.key);
  if (!S.patient.key) return;
  $(".patient-tap", el).hidden = S.patient.started;
  if (!w) {
    $(".patient-name", el).textContent = S.patient.key;
    $(".patient-cue", el).textContent = "Waiting…";
    el.dataset.cue = "wait";
    return;
  }
  const cue = patientCue(w);
  if (cue && !S.patient.cue && (w.settings || {}).tone) softTone();
  S.patient.cue = cue;
  el.dataset.cue = cue ? "on" : "off";
  $(".patient-name", el).textContent = w.wearer;
  $(".patient-exercise", el).textContent = w.exercise ? exLabel(w.exercise) : "";
  $(".patient-cue", el).textContent = cue ? "Take it easy — slow down and breathe" : "You're doing well";
}

function softTone() {
  if (!S.audio) return;
  const ctx = S.audio, t = ctx.currentTime;
  const o = ctx.createOscillator(), g = ctx.createGain();
  o.type = "sine"; o.frequency.value = 440;
  g.gain.setValueAtTime(0.0001, t);
  g.gain.exponentialRampToValueAtTime(0.12, t + 0.3);
  g.gain.exponentialRampToValueAtTime(0.0001, t + 1.6);
  o.connect(g).connect(ctx.destination);
  o.start(t); o.stop(t + 1.7);
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
    const thr = (S.gateways[w.gateway] || {}).threshold ?? 0.6;
    if (w.task !== "pain") drawTrace($(".trace", el), w, thr);
    const sess = w.session || {};
    if (sess.state === "active" && sess.started) {
      $(".session-state", el).textContent = `Session ${mmss(now() - Date.parse(sess.started) / 1000)}`;
    }
    if (!$(".timeline-box", el).hidden) drawTimeline($(".timeline", el), w, thr);
    if ($(".history", el).open) drawTrend($(".trend", el), w);
  }
  renderPatient();
}

function drawTrace(cv, w, thr) {
  const { ctx, W: cssW, H: cssH, colour } = canvasCtx(cv);
  const fg = colour("--trace", "#1565c0");
  const raw = colour("--trace-raw", "#90caf9");
  const grid = colour("--grid", "#ccc");
  const alertC = colour("--alert", "#c62828");
  const pad = { l: 30, r: 6, t: 6, b: 16 };
  const W = cssW - pad.l - pad.r, H = cssH - pad.t - pad.b;
  const t1 = now(), t0 = t1 - WINDOW_S;
  const X = (t) => pad.l + ((t - t0) / WINDOW_S) * W;
  const Y = (p) => pad.t + (1 - p) * H;
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
  $("#wearers").addEventListener("click", onCardClick);
  $("#wearers").addEventListener("change", onCardChange);
  $("#patient-close").addEventListener("click", closePatient);
  $("#patient").addEventListener("click", startPatient);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && S.patient.key) closePatient(); });
  window.addEventListener("hashchange", () => { readHash(); render(); });
  render();
  connect();
  setInterval(draw, 100);
}

init();

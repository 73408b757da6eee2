// warnd status wall (docs/operations.md): polls /wall/data and draws it; no external resources.
// Every figure is written with textContent (headlines come from feeds: never markup).
// Times and countdowns use the server's clock: the skew to the browser's clock is measured at
// each poll, and times of day are shown at the configured zone's UTC offset sent with the data.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const st = { data: null, skew: 0, offset: 8 * 3600, refresh: 5000, lastOk: 0, error: null };
  const WEEK = "日一二三四五六";
  const COLS = [
    ["divisions", "区划"],
    ["reached_in_time", "按时叫应"],
    ["reached_late", "超时叫应"],
    ["calling", "叫应中"],
    ["escalated", "已升级"],
    ["not_woken", "未叫醒"],
    ["overdue", "逾期"],
  ];
  const BAD = { not_woken: "bad", overdue: "bad", reached_late: "warn", escalated: "warn" };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const pad = (n) => String(n).padStart(2, "0");
  const serverNow = () => Date.now() + st.skew;
  const local = (ms) => new Date(ms + st.offset * 1000); // read with getUTC*

  function clockText(ms) {
    const d = local(ms);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function dateText(ms) {
    const d = local(ms);
    return `${d.getUTCFullYear()}年${d.getUTCMonth() + 1}月${d.getUTCDate()}日 星期${WEEK[d.getUTCDay()]}`;
  }
  // A running duration: "1天 02:03:04", "2:03:04", "0:03:04".
  function span(ms) {
    let s = Math.floor(Math.abs(ms) / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    return d ? `${d}天 ${pad(h)}:${pad(m)}:${pad(s)}` : `${h}:${pad(m)}:${pad(s)}`;
  }

  // Elements whose text follows the clock: data-due (a countdown) or data-since (time waited).
  function ticker(cls, attrs, render) {
    const e = el("span", cls);
    Object.assign(e.dataset, attrs);
    e.dataset.tick = render;
    tickOne(e, serverNow());
    return e;
  }
  function tickOne(e, now) {
    const kind = e.dataset.tick;
    if (kind === "onset") {
      const left = Number(e.dataset.due) - now;
      e.textContent = left >= 0 ? `还有 ${span(left)}` : `已过 ${span(left)}`;
      e.classList.toggle("past", left < 0);
    } else if (kind === "stage") {
      const left = Number(e.dataset.due) - now;
      e.textContent = left > 0 ? span(left) : "正在发出";
    } else if (kind === "since") {
      e.textContent = `已等 ${span(now - Number(e.dataset.since))}`;
    }
  }

  function cell(tag, cls, key, value) {
    const c = el(tag, cls, value);
    if (key) c.dataset.n = key;
    return c;
  }

  function levelsTable(w) {
    const t = el("table", "levels");
    const head = el("tr");
    head.append(el("th", "lv", "层级 · 时限"));
    for (const [, label] of COLS) head.append(el("th", null, label));
    head.append(el("th", null, "人员应答"));
    t.append(el("thead"));
    t.tHead.append(head);
    const body = el("tbody");
    for (const lv of w.levels) {
      const tr = el("tr");
      tr.dataset.level = lv.level;
      const pending = lv.stage_state === "pending";
      if (pending) tr.className = "pending";
      const first = el("td", "lv");
      first.append(el("span", "lvname", lv.level_zh));
      const when = pending ? `待发 ${lv.due_text}` : lv.deadline_text;
      const done = lv.divisions > 0 && lv.reached === lv.divisions;
      first.append(el("span", "deadline" + (lv.deadline_passed && !done ? " bad" : ""), when));
      tr.append(first);
      for (const [key] of COLS) {
        const v = lv[key];
        let cls = v && BAD[key] ? BAD[key] : "";
        if (key === "reached_in_time" && v && v === lv.divisions) cls = "good";
        if (key === "calling" && v) cls = "live";
        tr.append(cell("td", cls, key, v));
      }
      const people = el("td", "people");
      people.append(
        cell("span", null, "persons_acknowledged", lv.persons_acknowledged),
        el("span", "slash", "/"),
        cell("span", null, "persons_notified", lv.persons_notified),
      );
      tr.append(people);
      body.append(tr);
    }
    t.append(body);
    return t;
  }

  function card(w) {
    let cls = `warning c-${w.colour}`;
    if (w.drill) cls += " drill";
    if (w.urgent) cls += " urgent";
    if (w.state !== "active") cls += " lifted";
    const c = el("article", cls);
    c.dataset.key = w.key;
    c.dataset.drill = w.drill ? "1" : "0";
    c.dataset.colour = w.colour;
    c.append(el("div", "band", w.colour_zh));
    const body = el("div", "body");
    const head = el("div", "head");
    if (w.drill) head.append(el("span", "drill-mark", "【演练】"));
    const headline = w.headline || w.key;
    head.append(el("span", "headline", w.drill ? headline.replace(/^【演练】/, "") : headline));
    head.append(el("span", "state", w.state_zh));
    body.append(head);
    const times = el("div", "times");
    const onset = el("span", "onset");
    onset.append(el("span", null, `发生 ${w.onset_text}`));
    if (w.onset_ms !== null) onset.append(ticker("cd", { due: w.onset_ms }, "onset"));
    times.append(onset);
    const nxt = el("span", "next");
    if (w.next_stage) {
      nxt.append(el("span", null, `下一阶段 ${w.next_stage.level_zh} ${w.next_stage.due_text}`));
      nxt.append(ticker("cd stage", { due: w.next_stage.due_ms }, "stage"));
    } else if (w.state === "active") {
      nxt.append(el("span", "dim", "各阶段均已发出"));
    }
    times.append(nxt);
    if (w.reason) times.append(el("span", "reason", w.reason));
    times.append(el("span", "key", w.key));
    body.append(times, levelsTable(w));
    c.append(body);
    return c;
  }

  function entry(e) {
    const li = el("li", "nw" + (e.drill ? " drill" : ""));
    li.dataset.warning = e.warning;
    li.dataset.division = e.division;
    const head = el("div", "nw-head");
    if (e.drill) head.append(el("span", "drill-mark", "【演练】"));
    head.append(el("span", "nw-where", `${e.level_zh} ${e.division_name}`));
    head.append(el("span", "nw-code", e.division));
    li.append(head);
    const meta = el("div", "nw-meta");
    meta.append(el("span", null, `列入 ${e.since_text}`));
    meta.append(ticker("since", { since: Date.parse(e.since) }, "since"));
    meta.append(el("span", e.reached_at ? "nw-state warn" : "nw-state bad", e.state_zh));
    const headline = e.headline || e.warning;
    meta.append(el("span", "nw-warning", e.drill ? headline.replace(/^【演练】/, "") : headline));
    li.append(meta);
    const calls = el("div", "nw-calls");
    for (const p of e.to_call) {
      const s = el("span", "tc" + (p.acknowledged_at ? " acked" : ""));
      s.dataset.rung = p.rung;
      s.dataset.phone = p.phone;
      s.append(el("span", "rung", p.rung_zh), el("span", "who", p.name || p.contact_id));
      s.append(el("b", "phone", p.phone));
      if (p.acknowledged_at) s.append(el("span", "ok", "已应答"));
      calls.append(s);
    }
    if (!e.to_call.length) calls.append(el("span", "bad", "无可拨号码"));
    li.append(calls);
    return li;
  }

  // Cut a list to what its box holds and say how many are not shown (the page never scrolls).
  // One measuring pass: the "more" line is laid out first so that its space is kept free.
  function fit(box, items, more, hiddenBefore, say) {
    for (const i of items) i.hidden = false;
    more.textContent = say(Math.max(1, hiddenBefore));
    more.hidden = false;
    const inner = box.getBoundingClientRect().bottom - parseFloat(getComputedStyle(box).paddingBottom);
    const limit = inner - more.getBoundingClientRect().height;
    const bottoms = items.map((i) => i.getBoundingClientRect().bottom);
    let keep = items.length;
    if (hiddenBefore || (bottoms.length && bottoms[bottoms.length - 1] > inner + 1)) {
      keep = bottoms.findIndex((b) => b > limit + 1);
      keep = keep < 0 ? items.length : Math.max(1, keep);
    }
    for (const i of items.slice(keep)) i.hidden = true;
    const hidden = items.length - keep + hiddenBefore;
    more.textContent = hidden ? say(hidden) : "";
    more.hidden = !hidden;
    box.dataset.hidden = String(hidden);
  }

  function renderSummary(d) {
    const s = $("summary");
    s.replaceChildren();
    const r = d.totals.real;
    const part = (label, key, value, cls) => {
      const p = el("span", "part " + (cls || ""));
      p.append(el("span", "label", label), cell("b", null, key, value));
      return p;
    };
    s.append(part("真实预警", "real.warnings", d.counts.real));
    const reached = el("span", "part");
    reached.append(el("span", "label", "区划已叫应"), cell("b", null, "real.reached", r.reached));
    reached.append(el("span", "slash", "/"), cell("b", null, "real.divisions", r.divisions));
    s.append(reached);
    s.append(part("未叫醒", "real.not_woken", r.not_woken, r.not_woken ? "bad" : ""));
    s.append(part("逾期未叫应", "real.overdue", r.overdue, r.overdue ? "bad" : ""));
    if (d.counts.drill) s.append(part("演练（不计入）", "drill.warnings", d.counts.drill, "drilln"));
  }

  // Feed and connection banners; true when they changed (the lists below must fit again).
  function renderBanners() {
    const lines = [];
    const d = st.data;
    for (const f of d ? d.feeds : []) {
      if (f.ok) continue;
      lines.push(["feed", f.name, `⚠ 预警来源“${f.name}”异常：${f.problem}。新预警可能收不到，请人工核查来源。`]);
    }
    const age = Date.now() - st.lastOk;
    const stale = st.error || (st.lastOk && age > Math.max(3 * st.refresh, 15000));
    if (stale) {
      const since = st.lastOk ? `数据已 ${span(age)} 未更新` : "尚未取得数据";
      lines.push(["conn", "", `⚠ ${since}：${st.error || "连接中断"}。以下为最后一次取得的数据。`]);
    }
    const b = $("banners");
    const shape = lines.map((l) => l[0] + l[1]).join("|");
    const same = b.dataset.shape === shape;
    b.dataset.shape = shape;
    if (same && lines.length === b.children.length) {
      lines.forEach((l, i) => { b.children[i].textContent = l[2]; });
      return false;
    }
    b.replaceChildren(
      ...lines.map(([kind, name, text]) => {
        const x = el("div", `banner ${kind}`, text);
        if (name) x.dataset.feed = name;
        return x;
      }),
    );
    document.body.classList.toggle("stale", Boolean(stale));
    return true;
  }

  // Both lists cut to what fits, after anything that changes the space they have.
  function layout() {
    const d = st.data;
    if (!d) return;
    const box = $("warnings");
    const cards = [...box.querySelectorAll(".warning")];
    fit(box, cards, box.querySelector(".more"), 0, (n) => `另有 ${n} 个预警未显示（warnd status 查看全部）`);
    const items = [...$("nw-list").querySelectorAll("li.nw")];
    const extra = d.not_woken.total - d.not_woken.entries.length;
    fit($("notwoken"), items, $("nw-more"), extra, (n) => `另有 ${n} 条（warnd unreached 查看全部）`);
  }

  function render(d) {
    const started = performance.now();
    st.data = d;
    $("title").textContent = d.title || "预警叫应";
    document.title = `${d.title || "预警叫应"} · 值班墙`;
    renderSummary(d);
    const box = $("warnings");
    box.replaceChildren(...d.warnings.map(card), el("div", "more"));
    if (!d.warnings.length) box.prepend(el("div", "empty", "当前没有进行中的预警"));
    const nw = d.not_woken;
    const count = $("nw-count");
    count.textContent = nw.total ? `${nw.total} 处` + (nw.drill ? `（含演练 ${nw.drill}）` : "") : "无";
    count.dataset.n = String(nw.total);
    count.className = "count" + (nw.real ? " bad" : "");
    const list = $("nw-list");
    list.replaceChildren(...nw.entries.map(entry));
    if (!nw.total) list.append(el("li", "nw-none", "没有待处置的未叫醒区划"));
    const masked = d.masked ? " · 号码已隐去中间位" : "";
    $("updated").textContent = `数据 ${clockText(d.now_ms)} · 每 ${d.refresh_s} 秒刷新${masked}`;
    tick(); // the clock and banners first: they take space the lists must leave them
    layout();
    document.body.dataset.renderMs = String(Math.round(performance.now() - started));
    document.body.dataset.seq = String(d.seq);
    document.body.dataset.loaded = "1";
  }

  function tick() {
    const now = serverNow();
    if (st.data) {
      $("time").textContent = clockText(now);
      $("date").textContent = dateText(now);
    }
    for (const e of document.querySelectorAll("[data-tick]")) tickOne(e, now);
    if (renderBanners()) layout();
  }

  async function poll() {
    try {
      const sent = Date.now();
      const resp = await fetch("/wall/data", { cache: "no-store", credentials: "same-origin" });
      if (resp.status === 401) throw new Error("口令无效或已更换，请用新的值班墙地址打开");
      if (!resp.ok) throw new Error(`warnd 返回 HTTP ${resp.status}`);
      const d = await resp.json();
      const got = Date.now();
      // the server's clock as it answered (the figures themselves may be a second or two old)
      const served = Number(resp.headers.get("X-Warnd-Now")) || d.now_ms;
      st.skew = served - (sent + got) / 2;
      st.offset = d.utc_offset_s;
      st.refresh = d.refresh_s * 1000;
      st.lastOk = got;
      st.error = null;
      render(d);
    } catch (err) {
      const offline = err instanceof TypeError; // fetch itself failed: no answer at all
      st.error = offline || !err.message ? "无法连接 warnd" : err.message;
      if (renderBanners()) layout();
    }
    setTimeout(poll, st.refresh);
  }

  if (location.search) history.replaceState(null, "", location.pathname); // the token stays out of sight
  setInterval(tick, 1000);
  window.addEventListener("resize", layout);
  poll();
})();

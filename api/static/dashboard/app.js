// The supervisors' dashboard. Reads the /v1 API with the signed-in token and follows
// GET /v1/stream (Server-Sent Events); falls back to polling while the stream is down.
// All text goes into the page through textContent: nothing from the API is parsed as HTML.

import { Api, LiveStream, decodeClaims } from "./api.js";
import {
  asOfLabel,
  clockIn,
  dateIn,
  formatCount,
  formatMoney,
  formatRatio,
  periodLabel,
  sumMoney,
  todayIn,
} from "./format.js";
import { METRICS, isMoneyMetric, lang, setLang, t } from "./i18n.js";
import { wireClientHistory } from "./visits.js";
import { createDaily } from "./daily.js";

const TOKEN_KEY = "crm-dashboard-token";
const PREFS_KEY = "crm-dashboard-prefs";
const POLL_MS = 5000; // while the stream is down
const SAFETY_MS = 60000; // a full refresh even while live (day rollover, missed events)
const LAG_POLL_MS = 5000;
const LAG_KEEP_MS = 10 * 60 * 1000; // sparkline: the last ten minutes
const DEBOUNCE_MS = 300;
const ALL_BRANCHES = "*";

const $ = (id) => document.getElementById(id);
const tz =
  document.querySelector('meta[name="crm-timezone"]')?.content?.replace(/^\{\{.*\}\}$/, "") ||
  "Asia/Shanghai";

const state = {
  token: null,
  claims: null,
  api: null,
  stream: null,
  live: false,
  branches: [],
  branch: null,
  period: "month",
  at: "", // "" = today in the bank's time zone
  metric: "weighted_profit",
  wan: false,
  wall: false,
  selected: null, // manager id of the card
  names: new Map(), // manager id -> name
  branchOf: new Map(), // manager id -> branch id
  previous: new Map(), // leaderboard values, to flash what changed
  lag: new Map(), // "group|topic|partition" -> [{t, lag}]
  timers: {},
  pending: new Set(),
};

// --- small DOM helpers ----------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function panelMessage(panelId, text, kind = "") {
  const p = $(panelId).querySelector('[data-role="message"]');
  p.textContent = text || "";
  p.className = `message ${kind}`;
}

/** A failed API answer as a sentence; 401 signs out. Returns true when it was handled. */
function explain(panelId, res) {
  if (res.ok) {
    panelMessage(panelId, "");
    return false;
  }
  if (res.status === 401) {
    signOut(t("unauthorized"));
    return true;
  }
  if (res.status === 403) {
    panelMessage(panelId, t("forbidden") + (res.detail || ""), "forbidden");
  } else if (res.status === 404 && res.detail === "Not Found") {
    // the route itself is missing: this server does not offer the view (yet)
    panelMessage(panelId, t("not_available"), "muted");
  } else {
    panelMessage(panelId, t("error") + (res.detail || `HTTP ${res.status}`), "error");
  }
  return true;
}

const LIST_ROWS = 20; // overdue and reminder lists show the worst ones; the count says the rest

function moreLine(panelId, shown, total) {
  const p = $(panelId).querySelector('[data-role="more"]');
  p.textContent = total > shown ? t("more").replace("{n}", formatCount(total - shown)) : "";
}

function money(v) {
  return formatMoney(v, { wan: state.wan });
}

/** "label（x）" in Chinese, "label (x)" in English. */
function paren(label, x) {
  return lang() === "zh" ? `${label}（${x}）` : `${label} (${x})`;
}

function unit() {
  return state.wan ? t("wan_unit") : t("yuan");
}

function atDate() {
  return state.at || todayIn(tz);
}

function role() {
  return state.claims?.role;
}

function managerLabel(id) {
  const name = state.names.get(id);
  return name ? paren(name, id) : id;
}

// --- preferences (not secret: localStorage) and the token (this tab only: sessionStorage) ---
function loadPrefs() {
  let prefs = {};
  try {
    prefs = JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") || {};
  } catch {
    prefs = {};
  }
  const q = new URLSearchParams(location.search);
  const pick = (k) => q.get(k) ?? prefs[k];
  state.period = ["day", "week", "month", "quarter", "year"].includes(pick("period"))
    ? pick("period")
    : "month";
  state.metric = METRICS.includes(pick("metric")) ? pick("metric") : "weighted_profit";
  state.wan = String(pick("wan")) === "true" || pick("wan") === "1";
  state.wall = String(pick("wall")) === "true" || pick("wall") === "1";
  state.linkBranch = q.get("branch") || null; // named in the link: asked for as it is
  state.savedBranch = prefs.branch || null; // remembered: used only if this token has it
  setLang(pick("lang") === "en" ? "en" : "zh");
}

function savePrefs() {
  const prefs = {
    period: state.period,
    metric: state.metric,
    wan: state.wan,
    wall: state.wall,
    lang: lang(),
    branch: state.branch,
  };
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    // private mode: preferences last for this page only
  }
}

function takeTokenFromUrl() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = hash.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token.trim());
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
}

// --- sign-in ---------------------------------------------------------------------------------
function showSignIn(message = "") {
  $("signin").hidden = false;
  $("board").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("signin-error").textContent = message;
  $("token").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.stream?.stop();
  state.stream = null;
  for (const id of Object.values(state.timers)) clearInterval(id);
  state.timers = {};
  state.token = null;
  state.claims = null;
  state.selected = null;
  state.range = null;
  for (const m of [state.names, state.branchOf, state.previous, state.lag]) m.clear();
  setLive(false);
  showSignIn(message);
}

function signIn(token) {
  const claims = decodeClaims(token);
  if (!claims || !claims.role) {
    showSignIn(t("token_bad"));
    return;
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(t("token_expired"));
    return;
  }
  state.token = token;
  state.claims = claims;
  state.api = new Api(token);
  $("signin").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  start();
}

// --- layout by role ---------------------------------------------------------------------------
function describeWho() {
  const c = state.claims;
  const r = t(`role_${c.role}`);
  let who = r;
  if (c.role === "manager") who = `${r} ${c.manager_id}`;
  else if (c.role === "supervisor") who = `${r} · ${(c.branches || []).join(", ")}`;
  $("who").textContent = who;
}

async function loadBranches() {
  const r = role();
  if (r === "supervisor") return [...(state.claims.branches || [])].sort();
  if (r !== "admin") return [];
  // admins: the branches that have managers, from the bank-wide leaderboard
  const res = await state.api.get("/v1/leaderboard", { limit: 1000, period: "day" });
  if (!res.ok) return [];
  for (const item of res.data.items || []) {
    state.names.set(item.manager_id, item.name);
    state.branchOf.set(item.manager_id, item.branch_id);
  }
  return [...new Set((res.data.items || []).map((i) => i.branch_id).filter(Boolean))].sort();
}

function fillBranchSelect() {
  const select = $("branch");
  select.replaceChildren();
  if (role() === "admin") select.append(el("option", { value: ALL_BRANCHES }, t("all_branches")));
  for (const b of state.branches) select.append(el("option", { value: b }, b));
  const offered = (b) => [...select.options].some((o) => o.value === b);
  // a branch named in the link is asked for even outside the token's scope (the API says no,
  // and the page says so); a remembered one only when this token offers it
  const wanted = state.linkBranch || (offered(state.savedBranch) ? state.savedBranch : null);
  if (wanted && !offered(wanted)) {
    select.append(el("option", { value: wanted }, wanted));
  }
  state.branch = wanted || state.branches[0] || (role() === "admin" ? ALL_BRANCHES : null);
  select.value = state.branch ?? "";
  $("branch-field").hidden = !(role() === "admin" || role() === "supervisor");
}

function fillMetricSelect() {
  const select = $("metric");
  const keep = state.metric;
  select.replaceChildren(...METRICS.map((m) => el("option", { value: m }, t(`metric.${m}`))));
  select.value = keep;
}

function layout() {
  const r = role();
  const reader = r === "admin" || r === "supervisor" || r === "manager";
  $("leaderboard-panel").hidden = !(r === "admin" || r === "supervisor");
  $("metric-field").hidden = !(r === "admin" || r === "supervisor");
  $("card-panel").hidden = !reader;
  $("overdue-panel").hidden = !reader;
  $("quality-panel").hidden = !reader;
  $("reminders-panel").hidden = !reader;
  $("lag-panel").hidden = !(r === "ops" || r === "admin");
  $("controls").hidden = !reader;
  document.body.dataset.role = r || "";
}

// --- the views --------------------------------------------------------------------------------
async function refreshLeaderboard() {
  if ($("leaderboard-panel").hidden) return;
  const params = { period: state.period, at: atDate(), metric: state.metric, limit: 1000 };
  const bank = state.branch === ALL_BRANCHES;
  const path = bank
    ? "/v1/leaderboard"
    : `/v1/branches/${encodeURIComponent(state.branch || "")}/leaderboard`;
  $("leaderboard-title").textContent = t(bank ? "leaderboard_bank" : "leaderboard");
  if (!bank && !state.branch) {
    panelMessage("leaderboard-panel", t("none"), "muted");
    return;
  }
  const res = await state.api.get(path, params);
  const tbody = $("leaderboard").querySelector("tbody");
  if (explain("leaderboard-panel", res)) {
    tbody.replaceChildren();
    $("period-label").textContent = "";
    return;
  }
  const board = res.data;
  state.range = board.period;
  $("period-label").textContent = periodLabel(state.period, board.period, lang());
  const moneyMetric = isMoneyMetric(state.metric);
  $("value-head").textContent = moneyMetric ? paren(t(`metric.${state.metric}`), unit()) : t(`metric.${state.metric}`);
  const items = board.items || [];
  const numbers = items.map((i) => Math.max(0, Number(i.value) || 0));
  const top = Math.max(1, ...numbers);
  const rows = items.map((item, idx) => {
    state.names.set(item.manager_id, item.name);
    state.branchOf.set(item.manager_id, item.branch_id);
    const shown = moneyMetric ? money(item.value) : formatCount(item.value);
    const key = `${state.metric}|${item.manager_id}`;
    const before = state.previous.get(key);
    const changed = before !== undefined && before !== String(item.value);
    state.previous.set(key, String(item.value));
    const bar = el("span", { class: "bar" });
    bar.style.width = `${((numbers[idx] / top) * 100).toFixed(1)}%`;
    return el(
      "tr",
      {
        dataset: { manager: item.manager_id },
        class: [
          item.manager_id === state.selected ? "selected" : "",
          changed ? "changed" : "",
          item.rank <= 3 ? `top top${item.rank}` : "",
        ].join(" "),
        tabindex: "0",
      },
      el("td", { class: "rank" }, String(item.rank)),
      el(
        "td",
        { class: "name" },
        item.name || item.manager_id,
        el("small", {}, bank ? `${item.manager_id} · ${item.branch_id}` : item.manager_id),
      ),
      el("td", { class: "num value", dataset: { raw: String(item.value) } }, shown),
      el("td", { class: "bar-col" }, bar),
    );
  });
  for (const row of rows) {
    if (row.classList.contains("changed")) {
      row.addEventListener("animationend", () => row.classList.remove("changed"), { once: true });
    }
  }
  tbody.replaceChildren(...rows);
  if (!items.length) panelMessage("leaderboard-panel", t("none"), "muted");
  $("as-of").textContent = asOfLabel(items[0]?.tally?.as_of || "");
  if (!state.selected || !items.some((i) => i.manager_id === state.selected)) {
    if (items.length && !bank) {
      state.selected = items[0].manager_id;
      tbody.firstChild?.classList.add("selected");
      schedule("card");
    }
  }
}

function stat(label, value, extra = null) {
  return el("div", { class: "stat" }, el("span", { class: "label" }, label), el("strong", {}, value), extra);
}

async function refreshCard() {
  if ($("card-panel").hidden) return;
  const id = role() === "manager" ? state.claims.manager_id : state.selected;
  const body = $("card-body");
  if (!id) {
    panelMessage("card-panel", t("card_hint"), "muted");
    body.replaceChildren();
    $("card-name").textContent = "";
    return;
  }
  const path = `/v1/managers/${encodeURIComponent(id)}`;
  const [tally, assessment] = await Promise.all([
    state.api.get(`${path}/tally`, { period: "month", at: atDate() }),
    state.api.get(`${path}/assessment`, { period: "year", at: atDate() }),
  ]);
  $("card-name").textContent = managerLabel(id);
  if (explain("card-panel", tally)) {
    body.replaceChildren();
    return;
  }
  const d = tally.data;
  if (d.branch_id) state.branchOf.set(id, d.branch_id);
  const accounts = Object.values(d.accounts_opened || {}).reduce((a, b) => a + Number(b || 0), 0);
  const stats = el(
    "div",
    { class: "stats" },
    stat(paren(t("weighted_profit"), unit()), money(d.weighted_profit)),
    stat(t("transactions"), formatCount(d.transactions)),
    stat(paren(t("volume"), unit()), money(sumMoney(Object.values(d.volume || {})))),
    stat(t("accounts"), formatCount(accounts)),
    stat(t("visits"), formatCount(d.visits?.total ?? 0)),
    // 日均: the month's average daily balances (days up to today while it runs)
    d.average_balance && stat(paren(t("average_deposits"), unit()), money(d.average_balance.liability)),
    d.average_balance && stat(paren(t("average_loans"), unit()), money(d.average_balance.asset)),
  );
  const parts = [
    el(
      "p",
      { class: "sub" },
      // "this month" unless a past date is chosen: then that date's month
      `${state.at ? "" : `${t("this_month")} · `}${periodLabel("month", d.period, lang())}`,
    ),
    stats,
    targetView(d.target),
    scoreView(assessment),
  ];
  body.replaceChildren(...parts.filter(Boolean));
}

function targetView(target) {
  const box = el("div", { class: "target" }, el("h3", {}, t("target")));
  if (!target || target.target === null || target.target === undefined) {
    box.append(el("p", { class: "muted" }, t("target_none")));
    return box;
  }
  const ratio = Number(target.ratio) || 0;
  const fill = el("span", { class: `fill ${target.met ? "met" : target.on_track === false ? "behind" : "ok"}` });
  fill.style.width = `${Math.min(100, Math.max(0, ratio * 100)).toFixed(1)}%`;
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuenow": (ratio * 100).toFixed(1) }, fill);
  if (target.expected_to_date) {
    const expected = Number(target.expected_to_date) / Number(target.target);
    const mark = el("span", { class: "expected", title: t("expected") });
    mark.style.left = `${Math.min(100, Math.max(0, expected * 100)).toFixed(1)}%`;
    bar.append(mark);
  }
  const state_ = target.met ? t("met") : target.on_track === false ? t("behind") : t("on_track");
  box.append(
    bar,
    el(
      "p",
      { class: "target-line" },
      el("strong", { class: "ratio" }, formatRatio(target.ratio)),
      ` · ${money(target.actual)} / ${money(target.target)} ${unit()} · `,
      el("span", { class: `status ${target.met ? "met" : target.on_track === false ? "behind" : "ok"}` }, state_),
      target.expected_to_date ? ` · ${t("expected")} ${money(target.expected_to_date)}` : "",
    ),
  );
  return box;
}

function scoreView(res) {
  const box = el("div", { class: "score" }, el("h3", {}, t("score")));
  if (!res.ok) {
    box.append(el("p", { class: "muted" }, res.status === 403 ? t("forbidden") + res.detail : t("none")));
    return box;
  }
  const a = res.data;
  box.append(
    el(
      "div",
      { class: "stats" },
      stat(t("total_score"), a.total_score ?? "—"),
      stat(t("grade"), a.grade ?? "—"),
      stat(t("completion"), formatRatio(a.completion_ratio)),
    ),
  );
  // a settled year: the annual judgement (rules §15); a running one: its pace only
  if (a.settled) {
    const flag = (a.flags || [])[0];
    box.append(
      el(
        "p",
        { class: "judgement", dataset: { flag: flag || "" } },
        `${t("judgement")}：`,
        el("strong", { class: flag ? "status behind" : "status ok" }, flag ? t(`flag_${flag}`) : t("judgement_none")),
      ),
    );
  } else if (a.pace) {
    const on = a.pace.on_pace;
    box.append(
      el(
        "p",
        { class: "pace", dataset: { onPace: String(on) } },
        `${t("pace")} ${a.pace.expected_to_date ? money(a.pace.expected_to_date) : "—"} · `,
        el("span", { class: `status ${on === false ? "behind" : "ok"}` }, on === false ? t("behind_pace") : t("on_pace")),
        el("small", { class: "muted" }, ` · ${t("running_year")}`),
      ),
    );
  }
  const log = a.evaluation?.work_log;
  if (log) {
    box.append(
      el(
        "p",
        { class: "work-log" },
        `${t("work_log")}：`,
        t("work_log_line")
          .replace("{n}", formatCount(log.visits))
          .replace("{late}", formatCount(log.late))
          .replace("{h}", String(log.limit_hours)),
      ),
    );
  }
  return box;
}

function scopeParams() {
  if (role() === "manager") return { manager_id: state.claims.manager_id };
  if (state.branch && state.branch !== ALL_BRANCHES) return { branch_id: state.branch };
  return {};
}

function kindLabel(kind) {
  return t(`kind_${kind}`) === `kind_${kind}` ? kind : t(`kind_${kind}`);
}

async function refreshOverdue() {
  if ($("overdue-panel").hidden) return;
  const res = await state.api.get("/v1/overdue", { ...scopeParams(), limit: 200 });
  const tbody = $("overdue").querySelector("tbody");
  if (explain("overdue-panel", res)) {
    moreLine("overdue-panel", 0, 0);
    tbody.replaceChildren();
    $("overdue-count").textContent = "";
    return;
  }
  const items = [...(res.data.items || [])].sort(
    (a, b) => (b.overdue_days ?? 0) - (a.overdue_days ?? 0) || String(a.client_id).localeCompare(b.client_id),
  );
  const total = res.data.total ?? items.length;
  $("overdue-count").textContent = formatCount(total);
  moreLine("overdue-panel", Math.min(items.length, LIST_ROWS), total);
  tbody.replaceChildren(
    ...items.slice(0, LIST_ROWS).map((i) =>
      el(
        "tr",
        { dataset: { client: i.client_id }, tabindex: "0", class: (i.overdue_days ?? 0) >= 30 ? "severe" : "" },
        el("td", {}, i.client_name || i.name || i.client_id, i.client_name || i.name ? el("small", {}, i.client_id) : null),
        el("td", {}, managerLabel(i.manager_id)),
        el("td", {}, kindLabel(i.kind)),
        el("td", {}, i.due_at ? dateIn(tz, i.due_at) : "—"),
        el("td", { class: "num days" }, formatCount(i.overdue_days)),
      ),
    ),
  );
  if (!items.length) panelMessage("overdue-panel", t("none"), "muted");
}

async function refreshQuality() {
  if ($("quality-panel").hidden) return;
  const res = await state.api.get("/v1/data-quality", { ...scopeParams(), limit: 200 });
  const tbody = $("quality").querySelector("tbody");
  if (explain("quality-panel", res)) {
    moreLine("quality-panel", 0, 0);
    tbody.replaceChildren();
    $("quality-count").textContent = "";
    return;
  }
  const items = res.data.items || [];
  const total = res.data.total ?? items.length;
  $("quality-count").textContent = formatCount(total);
  moreLine("quality-panel", Math.min(items.length, LIST_ROWS), total);
  const origin = (o) => (t(`origin_${o}`) === `origin_${o}` ? o : t(`origin_${o}`));
  tbody.replaceChildren(
    ...items.slice(0, LIST_ROWS).map((i) =>
      el(
        "tr",
        { dataset: { client: i.client_id, rule: i.rule } },
        el("td", {}, i.client_id),
        el("td", {}, managerLabel(i.manager_id)),
        el(
          "td",
          { title: i.detail || "" },
          t(`rule_${i.rule}`) === `rule_${i.rule}` ? i.rule : t(`rule_${i.rule}`),
          el("small", {}, `${origin(i.origin)} ${i.claim_ratio} < ${i.floor}`),
        ),
      ),
    ),
  );
  if (!items.length) panelMessage("quality-panel", t("none"), "muted");
}

function statusLabel(status) {
  const key = `status_${status}`;
  return t(key) === key ? status || "" : t(key);
}

async function refreshReminders() {
  if ($("reminders-panel").hidden) return;
  // outstanding: open, and open past the grace period (escalated to the supervisor)
  const params = { limit: 500 };
  if (role() === "manager") params.manager_id = state.claims.manager_id;
  const [open, escalated] = await Promise.all([
    state.api.get("/v1/reminders", { ...params, status: "open" }),
    state.api.get("/v1/reminders", { ...params, status: "escalated" }),
  ]);
  const res = open.ok ? escalated : open;
  if (res.ok) res.data = { items: [...(open.data.items || []), ...(escalated.data.items || [])] };
  const tbody = $("reminders").querySelector("tbody");
  if (explain("reminders-panel", res)) {
    moreLine("reminders-panel", 0, 0);
    tbody.replaceChildren();
    $("reminders-count").textContent = "";
    return;
  }
  let items = res.data.items || [];
  // the list is scoped by the API; a chosen branch narrows it for display
  if (state.branch && state.branch !== ALL_BRANCHES && role() !== "manager") {
    items = items.filter((i) => {
      const b = i.branch_id || state.branchOf.get(i.manager_id);
      return !b || b === state.branch;
    });
  }
  items = [...items].sort(
    (a, b) =>
      (b.status === "escalated") - (a.status === "escalated") ||
      (b.overdue_days ?? 0) - (a.overdue_days ?? 0) ||
      String(a.client_id).localeCompare(b.client_id),
  );
  $("reminders-count").textContent = formatCount(items.length);
  moreLine("reminders-panel", Math.min(items.length, LIST_ROWS), items.length);
  tbody.replaceChildren(
    ...items.slice(0, LIST_ROWS).map((i) =>
      el(
        "tr",
        { dataset: { reminder: String(i.reminder_id), client: i.client_id }, tabindex: "0" },
        el("td", {}, i.client_id),
        el("td", {}, managerLabel(i.manager_id)),
        el("td", {}, kindLabel(i.kind)),
        el("td", {}, i.due_at ? dateIn(tz, i.due_at) : "—"),
        el("td", { class: "num" }, formatCount(i.overdue_days ?? 0)),
        el("td", {}, el("span", { class: `badge reminder-${i.status}` }, statusLabel(i.status))),
      ),
    ),
  );
  if (!items.length) panelMessage("reminders-panel", t("none"), "muted");
}

// --- lag, with a sparkline kept from repeated polls ---------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function sparkline(points, width = 120, height = 28) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("aria-hidden", "true");
  if (points.length < 2) return svg;
  const t0 = points[0].t;
  const span = Math.max(1, points[points.length - 1].t - t0);
  const max = Math.max(1, ...points.map((p) => p.lag));
  const xy = points.map((p) => [
    ((p.t - t0) / span) * (width - 2) + 1,
    height - 1 - (p.lag / max) * (height - 2),
  ]);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

async function refreshLag() {
  if ($("lag-panel").hidden) return;
  const res = await state.api.get("/v1/ops/lag", { limit: 1000 });
  if (role() === "ops") setLive(res.ok); // for ops the page lives on these polls
  const tbody = $("lag").querySelector("tbody");
  if (explain("lag-panel", res)) {
    tbody.replaceChildren();
    $("lag-status").textContent = "";
    return;
  }
  const now = Date.now();
  const status = String(res.data.status || "").toUpperCase();
  $("lag-status").textContent = status;
  $("lag-status").className = `badge status-${status.toLowerCase()}`;
  const items = res.data.items || [];
  // one consumer group (the usual case): named once in the heading, not on every row
  const groups = [...new Set(items.map((i) => i.group))];
  $("lag-group").textContent = groups.length === 1 ? groups[0] : "";
  const rows = items.map((i) => {
    const key = `${i.group}|${i.topic}|${i.partition}`;
    const hist = state.lag.get(key) || [];
    hist.push({ t: now, lag: Number(i.lag) || 0 });
    while (hist.length && hist[0].t < now - LAG_KEEP_MS) hist.shift();
    state.lag.set(key, hist);
    const s = String(i.status || "").toUpperCase();
    return el(
      "tr",
      { class: `status-${s.toLowerCase()}`, dataset: { partition: key } },
      el("td", {}, `${i.topic} #${i.partition}`, groups.length > 1 ? el("small", {}, i.group) : null),
      el("td", { class: "num" }, formatCount(i.lag)),
      el("td", {}, el("span", { class: `badge status-${s.toLowerCase()}` }, s)),
      el("td", { class: "spark-col" }, sparkline(hist)),
    );
  });
  tbody.replaceChildren(...rows);
  if (!items.length) panelMessage("lag-panel", t("none"), "muted");
}

// --- refresh scheduling ---------------------------------------------------------------------
const VIEWS = {
  leaderboard: refreshLeaderboard,
  card: refreshCard,
  overdue: refreshOverdue,
  quality: refreshQuality,
  reminders: refreshReminders,
  lag: refreshLag,
  daily: () => state.daily?.refresh() ?? Promise.resolve(), // trends, coverage, departures
};

/** Refresh some views once, ~300 ms after the last request for them (bursts collapse). */
function schedule(...views) {
  for (const v of views) state.pending.add(v);
  clearTimeout(state.timers.debounce);
  state.timers.debounce = setTimeout(flush, DEBOUNCE_MS);
}

let flushing = Promise.resolve();
function flush() {
  const views = [...state.pending];
  state.pending.clear();
  const run = (v) =>
    VIEWS[v]().catch((err) => {
      console.error(v, err);
    });
  // the leaderboard first: it tells the other lists the managers' names
  const first = views.includes("leaderboard") ? ["leaderboard"] : [];
  const rest = views.filter((v) => v !== "leaderboard");
  flushing = flushing
    .then(() => Promise.all(first.map(run)))
    .then(() => Promise.all(rest.map(run)));
  return flushing;
}

function refreshAll() {
  schedule("leaderboard", "card", "overdue", "reminders", "quality", "lag", "daily");
}

function setLive(live) {
  state.live = live;
  const marker = $("live");
  marker.classList.toggle("live", live);
  marker.classList.toggle("reconnecting", !live);
  $("live-text").textContent = t(live ? "live" : "reconnecting");
  document.body.dataset.live = live ? "live" : "reconnecting";
}

function onStreamEvent({ type, data }) {
  if (type === "tally") {
    const days = Array.isArray(data?.days) ? data.days : [];
    const range = state.range;
    const inView =
      !range || !days.length || days.some((d) => d >= range.from && d <= range.to);
    const branch = data?.branch_id;
    const views = [];
    if (inView && (state.branch === ALL_BRANCHES || !branch || branch === state.branch)) {
      views.push("leaderboard");
    }
    if (!data?.manager_id || data.manager_id === state.selected || role() === "manager") {
      views.push("card");
    }
    if (views.length) schedule(...views, "daily");
  } else if (type === "reminder") {
    schedule("reminders", "overdue");
  }
}

function startTimers() {
  for (const id of Object.values(state.timers)) clearInterval(id);
  state.timers = {};
  // polling only while the stream is not live; a slow full refresh always
  state.timers.poll = setInterval(() => {
    if (!state.live) schedule("leaderboard", "card", "overdue", "reminders", "quality");
  }, POLL_MS);
  state.timers.safety = setInterval(refreshAll, SAFETY_MS);
  if (!$("lag-panel").hidden) state.timers.lag = setInterval(() => schedule("lag"), LAG_POLL_MS);
}

async function start() {
  describeWho();
  layout();
  fillMetricSelect();
  state.branches = await loadBranches();
  fillBranchSelect();
  $("period").value = state.period;
  $("metric").value = state.metric;
  $("wan").checked = state.wan;
  $("at").value = atDate();
  if (role() === "manager") state.selected = state.claims.manager_id;
  refreshAll();
  startTimers();
  state.stream?.stop();
  state.stream = null;
  if (role() === "ops") return; // the stream carries tallies, not lag: the lag panel polls
  state.stream = new LiveStream({
    url: "/v1/stream",
    token: state.token,
    onEvent: onStreamEvent,
    onState: (s) => {
      const wasLive = state.live;
      setLive(s === "live");
      if (s === "live" && !wasLive) refreshAll(); // catch up on what the gap missed
    },
  });
  state.stream.start();
}

// --- controls -------------------------------------------------------------------------------
function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    signIn(token);
  });
  $("signout").addEventListener("click", () => signOut());
  $("lang").addEventListener("click", () => {
    setLang(lang() === "zh" ? "en" : "zh");
    tick();
    fillMetricSelect();
    setLive(state.live);
    savePrefs();
    if (state.token) {
      describeWho();
      refreshAll();
    }
  });
  $("wall").addEventListener("click", () => {
    state.wall = !state.wall;
    applyWall();
    savePrefs();
  });
  $("branch").addEventListener("change", (e) => {
    state.branch = e.target.value;
    state.selected = null;
    state.previous.clear();
    savePrefs();
    refreshAll();
  });
  $("period").addEventListener("change", (e) => {
    state.period = e.target.value;
    state.previous.clear();
    savePrefs();
    schedule("leaderboard");
  });
  $("metric").addEventListener("change", (e) => {
    state.metric = e.target.value;
    savePrefs();
    schedule("leaderboard");
  });
  $("at").addEventListener("change", (e) => {
    const v = e.target.value;
    state.at = v && v !== todayIn(tz) ? v : "";
    state.previous.clear();
    schedule("leaderboard", "card");
  });
  $("wan").addEventListener("change", (e) => {
    state.wan = e.target.checked;
    savePrefs();
    schedule("leaderboard", "card");
  });
  const pick = (e) => {
    const row = e.target.closest("tr[data-manager]");
    if (!row) return;
    state.selected = row.dataset.manager;
    for (const r of $("leaderboard").querySelectorAll("tr.selected")) r.classList.remove("selected");
    row.classList.add("selected");
    schedule("card", "daily");
  };
  $("leaderboard").addEventListener("click", pick);
  $("leaderboard").addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") pick(e);
  });
}

function applyWall() {
  document.body.classList.toggle("wall", state.wall);
  $("wall").setAttribute("aria-pressed", String(state.wall));
}

function tick() {
  $("clock").textContent = `${clockIn(tz)} ${tz === "Asia/Shanghai" ? t("beijing_time") : tz}`;
  // a date left at "today" follows the bank's calendar past midnight
  if (!state.at && $("at").value && $("at").value !== todayIn(tz)) {
    $("at").value = todayIn(tz);
    if (state.token) refreshAll();
  }
}

function main() {
  loadPrefs();
  applyWall();
  wire();
  // a client's visit ledger opens on a click in the overdue or reminder list
  wireClientHistory({ api: () => state.api, el, tz, managerLabel, onUnauthorized: () => signOut(t("unauthorized")) });
  state.daily = createDaily({
    api: () => state.api,
    role,
    branch: () => state.branch,
    selected: () => state.selected,
    managerId: () => state.claims?.manager_id,
    tz,
    el,
    managerLabel,
    allBranches: ALL_BRANCHES,
  });
  takeTokenFromUrl();
  tick();
  setInterval(tick, 1000);
  $("clock").title = tz;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showSignIn();
}

main();

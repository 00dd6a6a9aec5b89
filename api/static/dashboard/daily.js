// The daily work views: trend charts (plotly.js, served by the API from the installed plotly
// package: no CDN), visit coverage (走访覆盖率), a departed manager's clients waiting for
// reassignment, and the weekly branch report (XLSX) download.

import { formatCount, formatMoney, formatRatio, todayIn } from "./format.js";
import { lang } from "./i18n.js";

const LABELS = {
  zh: {
    trends: "趋势",
    burnup: "本月累计加权模拟利润与按日折算目标",
    daily: "每日加权模拟利润",
    months: "近十二个月加权模拟利润",
    actual: "累计实际",
    target: "按日折算目标",
    no_charts: "图表库未加载",
    coverage: "走访覆盖率",
    clients: "管户",
    covered: "已覆盖",
    overdue_visit: "逾期未访",
    overdue_check: "贷后逾期",
    per_client: "户均走访",
    branch_total: "支行合计",
    unassigned: "离职客户经理的客户（待重新分配）",
    weekly: "下载周报",
    weekly_done: "周报已下载",
    failed: "读取失败：",
    pick_manager: "点击排行榜中的客户经理查看每日数据",
  },
  en: {
    trends: "Trends",
    burnup: "Month to date weighted profit against the pro-rated target",
    daily: "Weighted profit per day",
    months: "Weighted profit, last twelve months",
    actual: "Actual to date",
    target: "Pro-rated target",
    no_charts: "The chart library did not load",
    coverage: "Visit coverage",
    clients: "Clients",
    covered: "Covered",
    overdue_visit: "Overdue visits",
    overdue_check: "Overdue checks",
    per_client: "Visits / client",
    branch_total: "Branch",
    unassigned: "Clients of departed managers (to reassign)",
    weekly: "Weekly report",
    weekly_done: "Weekly report downloaded",
    failed: "Could not load: ",
    pick_manager: "Click a manager in the leaderboard for their days",
  },
};

function l(key) {
  return LABELS[lang()]?.[key] ?? LABELS.zh[key] ?? key;
}

const $ = (id) => document.getElementById(id);

function monthRange(today) {
  const [y, m] = today.split("-").map(Number);
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const mm = String(m).padStart(2, "0");
  return { from: `${y}-${mm}-01`, to: `${y}-${mm}-${String(last).padStart(2, "0")}` };
}

function twelveMonths(today) {
  const [y, m] = today.split("-").map(Number);
  const start = new Date(Date.UTC(y, m - 12, 1));
  const from = `${start.getUTCFullYear()}-${String(start.getUTCMonth() + 1).padStart(2, "0")}-01`;
  return { from, to: monthRange(today).to };
}

// plotly.js draws from numbers; the figures shown in the hover text are the API's own strings
const num = (s) => (s === null || s === undefined ? null : Number(s));

const LAYOUT = {
  margin: { l: 70, r: 16, t: 8, b: 56 },
  height: 240,
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "rgba(0,0,0,0)",
  legend: { orientation: "h", y: -0.25 },
  font: { size: 12 },
};
const CONFIG = { displayModeBar: false, responsive: true, staticPlot: false };

function draw(id, traces, layout = {}) {
  const node = $(id);
  if (!window.Plotly) {
    node.textContent = l("no_charts");
    return;
  }
  window.Plotly.react(node, traces, { ...LAYOUT, ...layout }, CONFIG);
  node.dataset.points = String(traces.reduce((n, t) => n + (t.x?.length || 0), 0));
}

export function createDaily(ctx) {
  // ctx: api(), role(), branch(), selected(), tz, el, managerLabel, allBranches
  const panelsShown = () => {
    const r = ctx.role();
    const sup = r === "supervisor" || r === "admin";
    const branchOk = sup && ctx.branch() && ctx.branch() !== ctx.allBranches;
    $("trends-panel").hidden = !(r === "manager" || branchOk);
    $("coverage-panel").hidden = !(r === "manager" || branchOk);
    $("weekly-report").hidden = !branchOk;
    if (!branchOk) $("unassigned-panel").hidden = true;
    return { r, sup, branchOk };
  };

  async function refreshTrends(show) {
    if ($("trends-panel").hidden) return;
    const today = todayIn(ctx.tz);
    const month = monthRange(today);
    const manager = show.r === "manager" ? ctx.managerId() : ctx.selected();
    const base = show.branchOk
      ? `/v1/branches/${encodeURIComponent(ctx.branch())}/series`
      : `/v1/managers/${encodeURIComponent(manager)}/series`;
    $("trends-title").textContent = l("trends");
    $("chart-burnup-title").textContent = l("burnup");
    $("chart-daily-title").textContent = l("daily") + (manager ? ` · ${ctx.managerLabel(manager)}` : "");
    $("chart-months-title").textContent = l("months");
    const [burn, months] = await Promise.all([
      ctx.api().get(base, month),
      ctx.api().get(base, { ...twelveMonths(today), step: "month" }),
    ]);
    const msg = $("trends-panel").querySelector('[data-role="message"]');
    msg.textContent = burn.ok ? "" : l("failed") + (burn.detail || burn.status);
    if (burn.ok) {
      const pts = burn.data.points.filter((p) => p.from <= today);
      draw("chart-burnup", [
        {
          type: "scatter",
          mode: "lines+markers",
          name: l("actual"),
          x: pts.map((p) => p.from),
          y: pts.map((p) => num(p.cumulative)),
          text: pts.map((p) => formatMoney(p.cumulative)),
          hoverinfo: "x+text",
          line: { color: "#b0222b" },
        },
        {
          type: "scatter",
          mode: "lines",
          name: l("target"),
          x: burn.data.points.map((p) => p.from),
          y: burn.data.points.map((p) => num(p.target_to_date)),
          line: { color: "#888", dash: "dash" },
        },
      ]);
    }
    if (manager) {
      const daily = show.branchOk
        ? await ctx.api().get(`/v1/managers/${encodeURIComponent(manager)}/series`, month)
        : burn;
      if (daily.ok) {
        draw("chart-daily", [
          {
            type: "bar",
            name: l("daily"),
            x: daily.data.points.map((p) => p.from),
            y: daily.data.points.map((p) => num(p.value)),
            text: daily.data.points.map((p) => formatMoney(p.value)),
            hoverinfo: "x+text",
            textposition: "none",
            marker: { color: "#d9777c" },
          },
        ]);
      }
    } else {
      $("chart-daily").textContent = l("pick_manager");
    }
    if (months.ok) {
      draw("chart-months", [
        {
          type: "bar",
          name: l("months"),
          x: months.data.points.map((p) => p.from.slice(0, 7)),
          y: months.data.points.map((p) => num(p.value)),
          text: months.data.points.map((p) => formatMoney(p.value)),
          hoverinfo: "x+text",
          textposition: "none",
          marker: { color: "#b0222b" },
        },
      ]);
    }
  }

  async function refreshCoverage(show) {
    if ($("coverage-panel").hidden) return;
    const path = show.branchOk
      ? `/v1/branches/${encodeURIComponent(ctx.branch())}/coverage`
      : `/v1/managers/${encodeURIComponent(ctx.managerId())}/coverage`;
    const res = await ctx.api().get(path);
    const msg = $("coverage-panel").querySelector('[data-role="message"]');
    $("coverage-title").textContent = l("coverage");
    if (!res.ok) {
      msg.textContent = l("failed") + (res.detail || res.status);
      return;
    }
    msg.textContent = "";
    const d = res.data;
    $("coverage-share").textContent = d.coverage === null ? "—" : formatRatio(d.coverage);
    const rows = show.branchOk ? [{ ...d, manager_id: null }, ...d.managers] : [d];
    const el = ctx.el;
    $("coverage").querySelector("thead tr").replaceChildren(
      el("th", {}, ""),
      el("th", { class: "num" }, l("clients")),
      el("th", { class: "num" }, l("coverage")),
      el("th", { class: "num" }, l("overdue_visit")),
      el("th", { class: "num" }, l("overdue_check")),
      el("th", { class: "num" }, l("per_client")),
    );
    $("coverage").querySelector("tbody").replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { class: r.manager_id ? "" : "total", dataset: { manager: r.manager_id || "" } },
          el("td", {}, r.manager_id ? ctx.managerLabel(r.manager_id) : l("branch_total")),
          el("td", { class: "num" }, formatCount(r.clients)),
          el("td", { class: "num" }, r.coverage === null ? "—" : formatRatio(r.coverage)),
          el("td", { class: "num" }, formatCount(r.overdue.visit)),
          el("td", { class: "num" }, formatCount(r.overdue.post_loan_check)),
          el("td", { class: "num" }, r.visits_per_client ?? "—"),
        ),
      ),
    );
  }

  async function refreshUnassigned(show) {
    if (!show.branchOk) return;
    const res = await ctx.api().get(`/v1/branches/${encodeURIComponent(ctx.branch())}/unassigned`, { limit: 50 });
    const panel = $("unassigned-panel");
    if (!res.ok || !res.data.items.length) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    $("unassigned-title").textContent = l("unassigned");
    $("unassigned-count").textContent = formatCount(res.data.total);
    const el = ctx.el;
    $("unassigned").querySelector("tbody").replaceChildren(
      ...res.data.items.map((i) =>
        el(
          "tr",
          { dataset: { client: i.client_id }, tabindex: "0" },
          el("td", {}, i.client_id),
          el("td", {}, ctx.managerLabel(i.manager_id)),
          el("td", {}, i.tier || "—"),
          el("td", { class: "num" }, i.overdue_days_max === null ? "—" : formatCount(i.overdue_days_max)),
        ),
      ),
    );
  }

  async function downloadWeekly() {
    const branch = ctx.branch();
    const res = await fetch(`/v1/branches/${encodeURIComponent(branch)}/reports/weekly`, {
      headers: { Authorization: `Bearer ${ctx.api().token}` },
      cache: "no-store",
    });
    const note = $("weekly-note");
    if (!res.ok) {
      note.textContent = l("failed") + `HTTP ${res.status}`;
      return;
    }
    const blob = await res.blob();
    const name = /filename="([^"]+)"/.exec(res.headers.get("content-disposition") || "")?.[1] || `weekly-${branch}.xlsx`;
    const url = URL.createObjectURL(blob);
    const a = ctx.el("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    note.textContent = l("weekly_done");
  }

  $("weekly-report").addEventListener("click", () => downloadWeekly());

  return {
    async refresh() {
      const show = panelsShown();
      $("weekly-report").textContent = l("weekly");
      await Promise.all([refreshTrends(show), refreshCoverage(show), refreshUnassigned(show)]);
    },
  };
}

// A client's visit ledger (拜访记录台账): click a client in the overdue or reminder list and
// its visits open, newest first, with the notes the token may read (GET
// /v1/clients/{id}/visits; the server audits every answer that carries notes). Notes go into
// the page through textContent only.

import { dateIn, formatCount } from "./format.js";
import { lang } from "./i18n.js";

const LABELS = {
  zh: {
    title: "拜访记录",
    when: "时间",
    visitor: "拜访人",
    method: "方式",
    kind: "类型",
    minutes: "分钟",
    notes: "纪要",
    withheld: "（无权查看）",
    none: "暂无拜访记录",
    close: "关闭",
    loading: "读取中…",
    more: (n, total) => `显示最近 ${n} 条，共 ${total} 条`,
    forbidden: "无权查看：",
    error: "读取失败：",
    method_on_site: "上门",
    method_phone: "电话",
    method_sms: "短信",
    method_online: "网上",
    kind_routine: "常规拜访",
    kind_business: "业务拜访",
    kind_post_loan_check: "贷后检查",
    kind_surprise: "突击探访",
  },
  en: {
    title: "Visit ledger",
    when: "When",
    visitor: "Visitor",
    method: "Method",
    kind: "Kind",
    minutes: "Min",
    notes: "Notes",
    withheld: "(not visible to you)",
    none: "No visits yet",
    close: "Close",
    loading: "Loading…",
    more: (n, total) => `latest ${n} of ${total}`,
    forbidden: "Not allowed: ",
    error: "Could not load: ",
    method_on_site: "on site",
    method_phone: "phone",
    method_sms: "SMS",
    method_online: "online",
    kind_routine: "routine",
    kind_business: "business",
    kind_post_loan_check: "post-loan check",
    kind_surprise: "surprise",
  },
};
const ROWS = 50;

function l(key) {
  return LABELS[lang()]?.[key] ?? LABELS.zh[key] ?? key;
}

/**
 * Wire the history panel. `ctx` gives the page's helpers: `api()` (the signed-in Api),
 * `el`, `tz`, `managerLabel`, `onUnauthorized()`.
 */
export function wireClientHistory(ctx) {
  const panel = document.getElementById("history-panel");
  if (!panel) return;
  const body = panel.querySelector("tbody");
  const message = panel.querySelector('[data-role="message"]');
  const more = panel.querySelector('[data-role="more"]');
  let current = null;

  function say(text, kind = "") {
    message.textContent = text || "";
    message.className = `message ${kind}`;
  }

  function heads() {
    const names = ["when", "visitor", "method", "kind", "minutes", "notes"];
    panel.querySelector("thead tr").replaceChildren(...names.map((n) => ctx.el("th", n === "minutes" ? { class: "num" } : {}, l(n))));
    panel.querySelector('[data-role="title"]').textContent = l("title");
    panel.querySelector("#history-close").textContent = "×";
    panel.querySelector("#history-close").title = l("close");
  }

  async function open(clientId) {
    current = clientId;
    panel.hidden = false;
    heads();
    panel.querySelector("#history-client").textContent = clientId;
    body.replaceChildren();
    more.textContent = "";
    say(l("loading"), "muted");
    const res = await ctx.api().get(`/v1/clients/${encodeURIComponent(clientId)}/visits`, { limit: ROWS });
    if (current !== clientId) return;
    if (!res.ok) {
      if (res.status === 401) return ctx.onUnauthorized();
      say((res.status === 403 ? l("forbidden") : l("error")) + (res.detail || `HTTP ${res.status}`), res.status === 403 ? "forbidden" : "error");
      return;
    }
    const { items, total } = res.data;
    say(items.length ? "" : l("none"), "muted");
    body.replaceChildren(
      ...items.map((v) =>
        ctx.el(
          "tr",
          { dataset: { event: v.event_id } },
          ctx.el("td", {}, `${dateIn(ctx.tz, v.occurred_at)} ${v.occurred_at.slice(11, 16)}`),
          ctx.el("td", {}, ctx.managerLabel(v.manager_id)),
          ctx.el("td", {}, l(`method_${v.method}`)),
          ctx.el("td", {}, l(`kind_${v.kind}`)),
          ctx.el("td", { class: "num" }, v.duration_minutes == null ? "—" : formatCount(v.duration_minutes)),
          ctx.el("td", { class: v.notes_withheld ? "notes muted" : "notes" }, v.notes ?? (v.notes_withheld ? l("withheld") : "—")),
        ),
      ),
    );
    more.textContent = total > items.length ? l("more")(items.length, total) : "";
  }

  function pick(e) {
    const row = e.target.closest("tr[data-client]");
    if (row) open(row.dataset.client);
  }
  for (const id of ["overdue", "reminders", "unassigned"]) {
    const table = document.getElementById(id);
    table?.addEventListener("click", pick);
    table?.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") pick(e);
    });
  }
  panel.querySelector("#history-close").addEventListener("click", () => {
    current = null;
    panel.hidden = true;
  });
  document.getElementById("lang")?.addEventListener("click", () => {
    if (current) open(current);
  });
  return { open };
}

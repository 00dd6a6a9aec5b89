// Numbers, dates and labels the way the bank writes them. Pure functions, no DOM.
//
// Money arrives as decimal strings ("1234567.89"). It is never turned into a float: the
// digits are grouped as text, and the 万元 view (units of 10,000 yuan) divides exact integer
// cents with BigInt, rounding half-up (away from zero), as the API rounds.

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?$/;

/** "1234567" -> "1,234,567" (digits only; the sign is the caller's). */
export function groupDigits(digits) {
  const s = String(digits).replace(/^0+(?=\d)/, "");
  let out = "";
  for (let i = 0; i < s.length; i++) {
    if (i > 0 && (s.length - i) % 3 === 0) out += ",";
    out += s[i];
  }
  return out || "0";
}

/** A decimal string scaled to an integer number of 10^-places, rounded half-up. */
export function toScaled(value, places) {
  const m = DECIMAL.exec(String(value ?? "").trim());
  if (!m || (m[2] === "" && (m[3] ?? "") === "")) return null;
  const [, sign, whole, frac = ""] = m;
  const kept = frac.slice(0, places).padEnd(places, "0");
  let n = BigInt((whole || "0") + kept);
  if ((frac[places] ?? "0") >= "5") n += 1n;
  return sign === "-" ? -n : n;
}

function roundDiv(n, d) {
  const neg = n < 0n;
  const a = neg ? -n : n;
  let q = a / d;
  if ((a % d) * 2n >= d) q += 1n;
  return neg ? -q : q;
}

function showCents(cents) {
  const neg = cents < 0n;
  const a = neg ? -cents : cents;
  const whole = groupDigits((a / 100n).toString());
  const frac = (a % 100n).toString().padStart(2, "0");
  return `${neg ? "-" : ""}${whole}.${frac}`;
}

/** Money for display: "1,234,567.89", or in 万元 "123.46" when wan is true. */
export function formatMoney(value, { wan = false } = {}) {
  if (value === null || value === undefined || value === "") return "—";
  const cents = toScaled(typeof value === "number" ? value.toFixed(2) : value, 2);
  if (cents === null) return String(value);
  return showCents(wan ? roundDiv(cents, 10000n) : cents);
}

/** A count with thousand separators. */
export function formatCount(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const digits = Math.abs(Math.trunc(n)).toString();
  return (n < 0 ? "-" : "") + groupDigits(digits);
}

/** "0.4567" -> "45.67%" (the API's ratios carry four places). */
export function formatRatio(value) {
  if (value === null || value === undefined || value === "") return "—";
  const scaled = toScaled(value, 4);
  if (scaled === null) return String(value);
  return `${showCents(scaled)}%`;
}

/** Today's date (YYYY-MM-DD) in the bank's time zone, whatever the browser's zone is. */
export function todayIn(timeZone, now = new Date()) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).formatToParts(now);
  const get = (type) => parts.find((p) => p.type === type).value;
  return `${get("year")}-${get("month")}-${get("day")}`;
}

/** The wall clock (HH:MM:SS) in the bank's time zone. */
export function clockIn(timeZone, now = new Date()) {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone,
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(now);
}

function ymd(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(text || "");
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** ISO 8601 week number and its year (calendar arithmetic in UTC: no browser zone). */
export function isoWeek(text) {
  const [y, mo, d] = ymd(text);
  const t = new Date(Date.UTC(y, mo - 1, d));
  const dow = (t.getUTCDay() + 6) % 7; // Monday = 0
  t.setUTCDate(t.getUTCDate() - dow + 3); // the Thursday of this week
  const year = t.getUTCFullYear();
  const week = 1 + Math.floor((t - Date.UTC(year, 0, 1)) / 86400000 / 7);
  return { year, week };
}

const MONTHS_EN = [
  "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/** A human label for the API's period {from, to}, in Chinese or English. */
export function periodLabel(period, range, lang) {
  const from = ymd(range?.from);
  const to = ymd(range?.to);
  if (!from || !to) return "";
  const [y, m, d] = from;
  const zh = lang === "zh";
  switch (period) {
    case "day":
      return zh ? `${y}年${m}月${d}日` : `${d} ${MONTHS_EN[m - 1]} ${y}`;
    case "week": {
      const w = isoWeek(range.from);
      return zh
        ? `${w.year}年第${w.week}周（${m}月${d}日–${to[1]}月${to[2]}日）`
        : `Week ${w.week}, ${w.year} (${d} ${MONTHS_EN[m - 1]} – ${to[2]} ${MONTHS_EN[to[1] - 1]})`;
    }
    case "month":
      return zh ? `${y}年${m}月` : `${MONTHS_EN[m - 1]} ${y}`;
    case "quarter": {
      const q = Math.floor((m - 1) / 3) + 1;
      return zh ? `${y}年第${q}季度` : `Q${q} ${y}`;
    }
    case "year":
      return zh ? `${y}年` : `${y}`;
    default:
      return `${range.from} – ${range.to}`;
  }
}

/** "2026-11-24T10:15:00+08:00" -> "2026-11-24 10:15:00 (UTC+08:00)": the bank's clock as sent. */
export function asOfLabel(asOf) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.exec(
    asOf || "",
  );
  if (!m) return asOf || "";
  const zone = !m[3] || m[3] === "Z" ? "UTC" : `UTC${m[3]}`;
  return `${m[1]} ${m[2]} (${zone})`;
}

/** Whole days between two YYYY-MM-DD dates (b - a). */
export function daysBetween(a, b) {
  const [y1, m1, d1] = ymd(a);
  const [y2, m2, d2] = ymd(b);
  return Math.round((Date.UTC(y2, m2 - 1, d2) - Date.UTC(y1, m1 - 1, d1)) / 86400000);
}

/** The exact sum of decimal strings, as a two-place decimal string. */
export function sumMoney(values) {
  let cents = 0n;
  for (const v of values) {
    const c = toScaled(v, 2);
    if (c !== null) cents += c;
  }
  const neg = cents < 0n;
  const a = neg ? -cents : cents;
  return `${neg ? "-" : ""}${a / 100n}.${(a % 100n).toString().padStart(2, "0")}`;
}

/** A timestamp's calendar date in the bank's time zone (YYYY-MM-DD). */
export function dateIn(timeZone, isoText) {
  const t = new Date(isoText);
  return Number.isNaN(t.getTime()) ? String(isoText || "") : todayIn(timeZone, t);
}

// How values of the REST API are shown.
import { html } from "./lib.js";

export const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

/** Milliseconds since the epoch of an RFC 3339 time, whatever its number of fraction digits. */
export function millis(iso) {
  return iso ? Date.parse(iso.replace(/(\.\d{3})\d+/, "$1")) : NaN;
}

function pad(number, width = 2) {
  return String(number).padStart(width, "0");
}

/** The local time of day, with milliseconds if asked. */
export function clock(iso, { ms = false } = {}) {
  const at = new Date(millis(iso));
  if (Number.isNaN(at.getTime())) return "—";
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  return ms ? `${time}.${pad(at.getMilliseconds(), 3)}` : time;
}

export function duration(fromIso, toIso) {
  const ms = millis(toIso) - millis(fromIso);
  if (Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "—";
}

export function Status({ status }) {
  const known = STATUSES.includes(status) ? status : "unknown";
  return html`<span class=${`status status-${known}`} data-status=${status}>${status}</span>`;
}

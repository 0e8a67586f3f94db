// The console's only way to the server: the public REST API (README.md, API), with the
// signed-in credential sent as `Authorization: Bearer`. The credential lives in this tab's
// session storage and nowhere else; no request carries a cookie (`credentials: "omit"`).

const STORAGE_KEY = "agentq.console.credential";

export function savedCredential() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function saveCredential(value) {
  sessionStorage.setItem(STORAGE_KEY, value);
}

export function forgetCredential() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Who the credential says it is, for the header: never checked here, the server checks. */
export function describeCredential(value) {
  if (value.startsWith("agq_")) return `API key ${value.slice(0, 8)}…`;
  try {
    const part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    const tenant = claims.tenant_id ?? claims.sub;
    return `${claims.sub} · tenant ${tenant} · ${claims.role}`;
  } catch {
    return "signed in";
  }
}

/** An error answer of the API: docs/contract.md §2's `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

let onRefused = () => {};

/** What to do when the server refuses the credential (401): the app signs out. */
export function whenRefused(handler) {
  onRefused = handler;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's error page, say.
  }
  const error = body?.error ?? {};
  return new ApiError(
    response.status,
    error.code ?? `HTTP_${response.status}`,
    error.message ?? `The server answered ${response.status}`,
    Number(response.headers.get("Retry-After")) || 0,
  );
}

function request(path, { method = "GET", body, headers = {}, signal }) {
  const init = {
    method,
    signal,
    credentials: "omit",
    cache: "no-store",
    headers: { Authorization: `Bearer ${savedCredential() ?? ""}`, ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return fetch(path, init);
}

async function checked(response, refusedSignsOut) {
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401 && refusedSignsOut) onRefused(error);
  throw error;
}

/** One call: its JSON body (null for 204), or an ApiError. */
export async function api(path, { method, body, signal, refusedSignsOut = true } = {}) {
  const response = await checked(await request(path, { method, body, signal }), refusedSignsOut);
  return response.status === 204 ? null : response.json();
}

/** `path` with the query parameters that have a value. */
export function withQuery(path, parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * A job's events from GET /api/v1/jobs/{id}/stream, after `afterSequence`, as `{name, data}`.
 * EventSource cannot send an Authorization header, so the SSE body is read through fetch.
 */
export async function* jobEvents(jobId, afterSequence, signal) {
  const headers = { Accept: "text/event-stream" };
  if (afterSequence > 0) headers["Last-Event-ID"] = String(afterSequence);
  const path = `/api/v1/jobs/${encodeURIComponent(jobId)}/stream`;
  const response = await checked(await request(path, { headers, signal }), true);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const message = parseMessage(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (message) yield message;
        end = buffer.indexOf("\n\n");
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseMessage(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}

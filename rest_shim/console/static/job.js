// A job's page: its status, timings, result or error, and its events as a timeline, read
// live from the SSE route (README.md, API: Events), the answer growing as its tokens arrive.
import { ApiError, api, jobEvents } from "./api.js";
import { FINISHED, Status, clock, duration, shortId } from "./format.js";
import { html, useEffect, useState } from "./lib.js";

const RETRY_MS = 1000;
// Answers that end a stream for good: retrying would be refused the same way.
const FINAL_REFUSALS = new Set([401, 403, 404, 422]);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Read the job's events until its final one, resuming after the last seen if cut off. */
async function follow(jobId, signal, { onEvent, onLive, onProblem }) {
  let after = 0;
  while (!signal.aborted) {
    let waitMs = RETRY_MS;
    try {
      onLive(true);
      for await (const { name, data } of jobEvents(jobId, after, signal)) {
        if (name === "error") throw new ApiError(data.status, data.code, data.message);
        after = data.sequence;
        onEvent(data);
        if (FINISHED.has(data.type)) {
          onLive(false);
          return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (FINAL_REFUSALS.has(error.status)) {
        onProblem(error.message);
        onLive(false);
        return;
      }
      waitMs = Math.max(waitMs, (error.retryAfterS || 0) * 1000); // a 429's Retry-After
    }
    onLive(false);
    await sleep(waitMs, signal);
  }
}

/** Consecutive token events of one attempt as one row: they are many and small. */
function timeline(events) {
  const rows = [];
  for (const event of events) {
    const last = rows[rows.length - 1];
    if (event.type === "token" && last?.type === "token" && last.attempt === event.attempt) {
      last.pieces += 1;
      last.characters += event.delta.length;
      last.through = event.sequence;
    } else if (event.type === "token") {
      rows.push({ ...event, pieces: 1, characters: event.delta.length });
    } else {
      rows.push(event);
    }
  }
  return rows;
}

function EventDetail({ event }) {
  switch (event.type) {
    case "started":
      return html`attempt ${event.attempt}`;
    case "retrying":
      return html`${event.error} · next attempt in ${event.delay_seconds} s`;
    case "token":
      return html`${event.pieces} piece${event.pieces === 1 ? "" : "s"}, ${event.characters} characters streamed`;
    case "step": {
      const step = event.step;
      const confidence = step.confidence === null ? "" : ` · confidence ${step.confidence}`;
      return html`<details>
        <summary>${step.kind}, round ${step.round} · ${step.tokens} tokens${confidence}</summary>
        <pre>${step.text}</pre>
      </details>`;
    }
    case "completed":
      return html`${event.result?.tokens_used ?? 0} tokens`;
    case "failed":
      return html`${event.error}`;
    default:
      return "";
  }
}

function Timings({ job }) {
  const rows = [
    ["queued", clock(job.queued_at)],
    ["started", clock(job.started_at)],
    ["finished", clock(job.completed_at)],
    ["waited", job.started_at ? duration(job.queued_at, job.started_at) : "—"],
    ["ran", job.completed_at ? duration(job.started_at, job.completed_at) : "—"],
    ["attempts", job.attempts],
    ["depth", job.depth],
  ];
  return html`<dl class="timings">
    ${rows.map(([name, value]) => html`<div><dt>${name}</dt><dd>${value}</dd></div>`)}
  </dl>`;
}

function Answer({ job, events }) {
  const result = job?.result;
  if (result) {
    return html`<div class="answer" data-answer="result">
      <pre>${result.response}</pre>
      <p class="hint">
        ${result.tokens_used} tokens${result.verified ? ` · verified (${result.confidence})` : ""}
        ${result.new_context_id && html` · context <code>${result.new_context_id}</code>`}
      </p>
    </div>`;
  }
  const attempt = events.reduce((latest, event) => Math.max(latest, event.attempt), 0);
  const streamed = events
    .filter((event) => event.type === "token" && event.attempt === attempt)
    .map((event) => event.delta)
    .join("");
  return html`<div class="answer" data-answer="stream">
    <pre>${streamed}<span class="cursor"></span></pre>
  </div>`;
}

export function JobPage({ jobId }) {
  const [job, setJob] = useState(null);
  const [events, setEvents] = useState([]);
  const [live, setLive] = useState(false);
  const [problem, setProblem] = useState(null);

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    const refresh = () =>
      api(`/api/v1/jobs/${encodeURIComponent(jobId)}`, { signal }).then(setJob, (error) => {
        if (!signal.aborted) setProblem(error.message);
      });
    refresh();
    follow(jobId, signal, {
      onEvent: (event) => {
        setEvents((seen) => [...seen, event]);
        // Status, timings and result come from the job itself, re-read at each step.
        if (event.type !== "token") refresh();
      },
      onLive: setLive,
      onProblem: setProblem,
    });
    return () => abort.abort();
  }, [jobId]);

  const cancel = () =>
    api(`/api/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" }).then(setJob, (error) =>
      setProblem(error.message),
    );
  const error = job?.error ?? job?.result?.error;
  return html`
    <p><a href="#/">← Overview</a></p>
    <section class="card job" aria-label="Job">
      <h2>
        Job <code>${jobId}</code>
        ${job && html`<${Status} status=${job.status} />`}
        ${live && html`<span class="live" title="Reading the job's event stream">live</span>`}
        ${job && !FINISHED.has(job.status) && html`<button class="quiet" onClick=${cancel}>Cancel</button>`}
      </h2>
      ${problem && html`<p class="problem" role="alert">${problem}</p>`}
      ${job &&
      html`<p class="hint">
          agent <code>${job.agent_id}</code>
          ${job.parent_job_id &&
          html` · parent <a href=${`#/jobs/${job.parent_job_id}`}><code>${shortId(job.parent_job_id)}</code></a>`}
        </p>
        <${Timings} job=${job} />`}
      ${error && html`<p class="problem" data-error>${error}</p>`}
      ${job?.result?.prompt && html`<h3>Prompt</h3><pre class="prompt">${job.result.prompt}</pre>`}
      <h3>Answer</h3>
      <${Answer} job=${job} events=${events} />
    </section>
    <section class="card" aria-label="Events">
      <h2>Events <span class="count">${events.length}</span></h2>
      <ol class="timeline">
        ${timeline(events).map(
          (event) => html`
            <li key=${event.sequence} class=${`event event-${event.type}`} data-event=${event.type}>
              <span class="seq">#${event.sequence}${event.through ? `–${event.through}` : ""}</span>
              <time>${clock(event.created_at, { ms: true })}</time>
              <span class="type">${event.type}</span>
              <span class="detail"><${EventDetail} event=${event} /></span>
            </li>
          `,
        )}
      </ol>
    </section>
  `;
}

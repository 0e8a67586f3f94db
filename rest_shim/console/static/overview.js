// The overview: the tenant's agents (and a form to create one), a form to run an
// execution, the charts, and the tenant's jobs, filtered by status and agent and polled live.
import { api, withQuery } from "./api.js";
import { Status, STATUSES, clock, duration, shortId } from "./format.js";
import { html, useCallback, useEffect, useMemo, useState, usePoll } from "./lib.js";
import { Metrics } from "./metrics.js";

const JOBS_SHOWN = 50;
const JOBS_POLL_MS = 2000;

export function Overview() {
  const [agents, setAgents] = useState([]);
  const [problem, setProblem] = useState(null);
  const [created, setCreated] = useState(null);

  const loadAgents = useCallback(async () => {
    try {
      setAgents((await api(withQuery("/api/v1/agents", { page_size: 100 }))).data);
      setProblem(null);
    } catch (error) {
      setProblem(error.message);
    }
  }, []);
  useEffect(() => {
    loadAgents();
  }, []);
  const names = useMemo(() => new Map(agents.map((agent) => [agent.id, agent.name])), [agents]);

  const onCreated = (agent) => {
    setCreated(agent.id);
    loadAgents();
  };
  return html`
    <${Metrics} />
    <div class="columns">
      <div class="side">
        <${ExecuteForm} agents=${agents} preferred=${created} />
        <${AgentsPanel} agents=${agents} problem=${problem} onCreated=${onCreated} />
      </div>
      <${JobsPanel} agents=${agents} names=${names} />
    </div>
  `;
}

/** A form's state: its fields, whether it is being sent, and the server's answer to it. */
function useForm(initial) {
  const [fields, setFields] = useState(initial);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState(null);
  const bind = (name) => ({
    name,
    value: fields[name],
    onInput: (event) => setFields({ ...fields, [name]: event.currentTarget.value }),
  });
  async function send(event, call) {
    event.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      await call(fields, setFields);
    } catch (error) {
      setProblem(error.message);
    } finally {
      setBusy(false);
    }
  }
  return { fields, busy, problem, bind, send };
}

function AgentsPanel({ agents, problem, onCreated }) {
  const form = useForm({ name: "", role: "" });
  const submit = (event) =>
    form.send(event, async (fields, setFields) => {
      const agent = await api("/api/v1/agents", {
        method: "POST",
        body: { name: fields.name, role: fields.role },
      });
      setFields({ name: "", role: "" });
      onCreated(agent);
    });
  return html`
    <section class="card" aria-label="Agents">
      <h2>Agents <span class="count">${agents.length}</span></h2>
      ${problem && html`<p class="problem">${problem}</p>`}
      <ul class="agents">
        ${agents.map(
          (agent) => html`
            <li key=${agent.id} data-agent=${agent.id}>
              <strong>${agent.name}</strong> <code>${shortId(agent.id)}</code>
              <span class="role" title=${agent.role}>${agent.role}</span>
            </li>
          `,
        )}
      </ul>
      <form class="stack" id="create-agent" onSubmit=${submit}>
        <h3>Create an agent</h3>
        <input placeholder="name" required ...${form.bind("name")} />
        <textarea placeholder="role: the system prompt" rows="2" required ...${form.bind("role")} />
        ${form.problem && html`<p class="problem" role="alert">${form.problem}</p>`}
        <button type="submit" disabled=${form.busy}>Create agent</button>
      </form>
    </section>
  `;
}

function ExecuteForm({ agents, preferred }) {
  const form = useForm({ prompt: "" });
  const [agentId, setAgentId] = useState("");
  const chosen = agents.some((agent) => agent.id === agentId)
    ? agentId
    : (agents.find((agent) => agent.id === preferred) ?? agents[0])?.id ?? "";
  const submit = (event) =>
    form.send(event, async (fields) => {
      const ack = await api(`/api/v1/agents/${encodeURIComponent(chosen)}/execute`, {
        method: "POST",
        body: { prompt: fields.prompt },
      });
      location.hash = `#/jobs/${ack.job_id}`;
    });
  return html`
    <section class="card" aria-label="Execute">
      <h2>Run an execution</h2>
      <form class="stack" id="execute" onSubmit=${submit}>
        <select
          name="agent"
          value=${chosen}
          onChange=${(event) => setAgentId(event.currentTarget.value)}
        >
          ${agents.map((agent) => html`<option key=${agent.id} value=${agent.id}>${agent.name}</option>`)}
        </select>
        <textarea placeholder="prompt" rows="3" required ...${form.bind("prompt")} />
        ${form.problem && html`<p class="problem" role="alert">${form.problem}</p>`}
        <button type="submit" disabled=${form.busy || !chosen}>Execute</button>
      </form>
    </section>
  `;
}

function JobsPanel({ agents, names }) {
  const [status, setStatus] = useState("");
  const [agentId, setAgentId] = useState("");
  const [jobs, setJobs] = useState(null);
  const [problem, setProblem] = useState(null);
  const [updated, setUpdated] = useState(null);

  usePoll(
    async (signal) => {
      const path = withQuery("/api/v1/jobs", { page_size: JOBS_SHOWN, status, agent_id: agentId });
      try {
        const page = await api(path, { signal });
        setJobs(page.data);
        setProblem(null);
        setUpdated(new Date().toISOString());
      } catch (error) {
        if (!signal.aborted) setProblem(error.message);
        throw error;
      }
    },
    JOBS_POLL_MS,
    [status, agentId],
  );

  return html`
    <section class="card jobs" aria-label="Jobs">
      <h2>
        Jobs <span class="live" title="Refreshed every 2 s">live</span>
        <span class="updated">${updated ? `updated ${clock(updated)}` : "loading…"}</span>
      </h2>
      <div class="filters">
        <select name="status" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
          <option value="">every status</option>
          ${STATUSES.map((name) => html`<option value=${name}>${name}</option>`)}
        </select>
        <select name="agent_id" value=${agentId} onChange=${(e) => setAgentId(e.currentTarget.value)}>
          <option value="">every agent</option>
          ${agents.map((agent) => html`<option value=${agent.id}>${agent.name}</option>`)}
        </select>
      </div>
      ${problem && html`<p class="problem">${problem}</p>`}
      <table>
        <thead>
          <tr><th>status</th><th>job</th><th>agent</th><th>queued</th><th>ran</th><th>attempts</th></tr>
        </thead>
        <tbody>
          ${(jobs ?? []).map(
            (job) => html`
              <tr key=${job.job_id} data-job=${job.job_id}>
                <td><${Status} status=${job.status} /></td>
                <td><a href=${`#/jobs/${job.job_id}`}><code>${shortId(job.job_id)}</code></a></td>
                <td>${names.get(job.agent_id) ?? shortId(job.agent_id)}</td>
                <td>${clock(job.queued_at)}</td>
                <td>${job.completed_at ? duration(job.started_at, job.completed_at) : "—"}</td>
                <td>${job.attempts}</td>
              </tr>
            `,
          )}
        </tbody>
      </table>
      ${jobs && jobs.length === 0 && html`<p class="empty">No jobs${status || agentId ? " match" : " yet"}.</p>`}
      ${jobs && jobs.length === JOBS_SHOWN && html`<p class="empty">The newest ${JOBS_SHOWN} are shown.</p>`}
    </section>
  `;
}

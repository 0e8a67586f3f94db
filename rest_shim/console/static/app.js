// The agentq web console (README.md, Console): sign in, then the overview (#/) or a job's
// page (#/jobs/<id>). Routes live in the URL's fragment, so the shim serves one page.
import {
  api,
  describeCredential,
  forgetCredential,
  saveCredential,
  savedCredential,
  whenRefused,
} from "./api.js";
import { JobPage } from "./job.js";
import { html, render, useEffect, useState } from "./lib.js";
import { Overview } from "./overview.js";

const JOB_ROUTE = /^#\/jobs\/([0-9a-fA-F-]{36})$/;

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  const job = JOB_ROUTE.exec(hash);
  return { jobId: job ? job[1].toLowerCase() : null };
}

function SignIn({ notice, onSignedIn }) {
  const [value, setValue] = useState("");
  const [problem, setProblem] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const credential = value.trim();
    if (!credential) return;
    setBusy(true);
    setProblem(null);
    saveCredential(credential);
    try {
      // Any call the credential may make proves the server takes it; a 403 (a key
      // without jobs:read, say) still signs in, and each panel says what it may not see.
      await api("/api/v1/jobs?page_size=1", { refusedSignsOut: false }).catch((error) => {
        if (error.status !== 403) throw error;
      });
      onSignedIn(credential);
    } catch (error) {
      forgetCredential();
      setProblem(error.status === 401 ? `The server refused it: ${error.message}` : error.message);
    } finally {
      setBusy(false);
    }
  }

  const shown = problem ?? notice;
  return html`
    <div class="signin">
      <form class="card" onSubmit=${submit}>
        <h1><span class="logo"></span>agentq console</h1>
        <label for="credential">API key or JWT</label>
        <input
          id="credential"
          name="credential"
          type="password"
          autocomplete="off"
          spellcheck="false"
          placeholder="agq_… or eyJ…"
          value=${value}
          onInput=${(event) => setValue(event.currentTarget.value)}
        />
        ${shown && html`<p class="problem" role="alert">${shown}</p>`}
        <button type="submit" disabled=${busy}>Sign in</button>
        <p class="hint">
          Mint a token with <code>agentq token --sub you --role user</code>, or use an API key.
          It is kept in this tab's session storage only, and sent to this server's REST API
          as <code>Authorization: Bearer</code>.
        </p>
      </form>
    </div>
  `;
}

function App() {
  const [credential, setCredential] = useState(savedCredential());
  const [notice, setNotice] = useState(null);
  const route = useRoute();

  useEffect(() => {
    whenRefused((error) => {
      forgetCredential();
      setCredential(null);
      setNotice(`Signed out: the server refused the credential (${error.message}).`);
    });
  }, []);

  if (!credential) {
    return html`<${SignIn}
      notice=${notice}
      onSignedIn=${(value) => {
        setNotice(null);
        setCredential(value);
      }}
    />`;
  }
  const signOut = () => {
    forgetCredential();
    setCredential(null);
  };
  return html`
    <header class="top">
      <a class="brand" href="#/"><span class="logo"></span>agentq console</a>
      <nav><a href="#/">Overview</a></nav>
      <span class="who" title="From the credential; the server checks it on every call">
        ${describeCredential(credential)}
      </span>
      <button class="quiet" onClick=${signOut}>Sign out</button>
    </header>
    <main>
      ${route.jobId
        ? html`<${JobPage} key=${route.jobId} jobId=${route.jobId} />`
        : html`<${Overview} />`}
    </main>
  `;
}

render(html`<${App} />`, document.getElementById("app"));

// Queue depth and throughput, computed from the tenant's own jobs through the public API.
// The service's Prometheus metrics count every tenant's jobs, which a tenant may not see,
// so the console never reads them (README.md, Console).
import { api, withQuery } from "./api.js";
import { millis } from "./format.js";
import { html, useEffect, useRef, useState, usePoll } from "./lib.js";
import uPlot from "./vendor/uPlot.esm.js";

const POLL_MS = 5000;
// A page of one status: the counts are exact up to this, then shown as "100+".
const COUNTED = 100;
const SAMPLES_KEPT = 360; // 30 minutes of samples at one per 5 s
const MINUTES_SHOWN = 15;
const HEIGHT = 150;

/** Completed jobs per minute over the last MINUTES_SHOWN minutes, as uPlot's columns. */
export function perMinute(jobs, nowMs) {
  const thisMinute = Math.floor(nowMs / 60000);
  const minutes = [];
  const counts = [];
  for (let minute = thisMinute - MINUTES_SHOWN + 1; minute <= thisMinute; minute++) {
    minutes.push(minute * 60);
    counts.push(0);
  }
  for (const job of jobs) {
    const index = Math.floor(millis(job.completed_at) / 60000) - (thisMinute - MINUTES_SHOWN + 1);
    if (index >= 0 && index < counts.length) counts[index] += 1;
  }
  return [minutes, counts];
}

function count(page) {
  return { n: page.data.length, more: page.meta.next_page_token !== null };
}

export function Metrics() {
  const samples = useRef([[], [], []]);
  const [depth, setDepth] = useState(null);
  const [throughput, setThroughput] = useState([[], []]);
  const [problem, setProblem] = useState(null);

  usePoll(
    async (signal) => {
      const pages = ["pending", "running", "completed"].map((status) =>
        api(withQuery("/api/v1/jobs", { status, page_size: COUNTED }), { signal }),
      );
      try {
        const [pending, running, completed] = await Promise.all(pages);
        const now = Date.now();
        const [times, pendings, runnings] = samples.current;
        times.push(now / 1000);
        pendings.push(pending.data.length);
        runnings.push(running.data.length);
        if (times.length > SAMPLES_KEPT) samples.current.forEach((column) => column.shift());
        setDepth({ pending: count(pending), running: count(running), at: now });
        setThroughput(perMinute(completed.data, now));
        setProblem(null);
      } catch (error) {
        if (!signal.aborted) setProblem(error.message);
        throw error;
      }
    },
    POLL_MS,
    [],
  );

  const lastMinute = throughput[1].length ? throughput[1][throughput[1].length - 1] : 0;
  const shown = (counted) => (counted ? `${counted.n}${counted.more ? "+" : ""}` : "…");
  return html`
    <section class="metrics" aria-label="Queue">
      <div class="card figures">
        <div><span class="figure" data-figure="pending">${shown(depth?.pending)}</span>pending</div>
        <div><span class="figure" data-figure="running">${shown(depth?.running)}</span>running</div>
        <div><span class="figure">${lastMinute}</span>completed this minute</div>
      </div>
      <div class="card chart-card">
        <h2>Queue depth <span class="hint">your pending and running jobs, every 5 s</span></h2>
        ${problem && html`<p class="problem">${problem}</p>`}
        <${Chart} options=${DEPTH} data=${depth ? samples.current.map((c) => c.slice()) : [[], [], []]} />
      </div>
      <div class="card chart-card">
        <h2>Throughput <span class="hint">your completed jobs per minute</span></h2>
        <${Chart} options=${THROUGHPUT} data=${throughput} />
      </div>
    </section>
  `;
}

const fromZero = (u, min, max) => [0, Math.max(1, Math.ceil(max * 1.15))];
// Half a minute either side, so the first and last bars are drawn whole.
const padded = (u, min, max) => [min - 30, max + 30];
const LEGEND = { live: false };
const DEPTH = {
  legend: LEGEND,
  scales: { x: { time: true }, y: { range: fromZero } },
  series: [
    {},
    { label: "pending", stroke: "#d97706", width: 2, fill: "rgba(217,119,6,0.08)" },
    { label: "running", stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.08)" },
  ],
  axes: [{}, { size: 40 }],
};
const THROUGHPUT = {
  legend: LEGEND,
  scales: { x: { time: true, range: padded }, y: { range: fromZero } },
  series: [
    {},
    {
      label: "completed / min",
      stroke: "#16a34a",
      fill: "rgba(22,163,74,0.35)",
      paths: uPlot.paths.bars({ size: [0.7, 40] }),
      points: { show: false },
    },
  ],
  axes: [{}, { size: 40 }],
};

/** A uPlot chart that follows its box's width and redraws when `data` changes. */
function Chart({ options, data }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const element = box.current;
    plot.current = new uPlot({ ...options, width: element.clientWidth || 400, height: HEIGHT }, data, element);
    let frame = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => plot.current.setSize({ width: element.clientWidth, height: HEIGHT }));
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      cancelAnimationFrame(frame);
      plot.current.destroy();
    };
  }, []);
  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  return html`<div class="chart" ref=${box}></div>`;
}

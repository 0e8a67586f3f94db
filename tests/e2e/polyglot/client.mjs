// A Node.js client of agentq that knows nothing but the .proto files in proto/.
//
// It runs the create -> execute -> poll flow of docs/contract.md §3 against a gRPC server and
// prints one JSON line with the outcome, then probes GetJob without a token and reports
// the status it got. Any failure of the flow exits non-zero with the error on stderr.
//
// Usage:
//   node client.mjs --target HOST:PORT --proto-dir DIR --googleapis-dir DIR [--token JWT]
//
// --proto-dir is the repository's proto/ directory; --googleapis-dir is a directory that
// holds the google/api protos those import (annotations.proto, http.proto and
// field_behavior.proto), the repository's third_party/googleapis/. The token may also
// come from the environment variable AGENTQ_TOKEN, which keeps it out of the process list.
// proto-loader brings the google/protobuf well-known types itself.

import path from "node:path";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const CALL_DEADLINE_MS = 10_000;
const POLL_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 100;
const FINISHED = new Set(["JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELLED"]);

function options() {
  const { values } = parseArgs({
    options: {
      target: { type: "string" },
      token: { type: "string" },
      "proto-dir": { type: "string" },
      "googleapis-dir": { type: "string" },
    },
  });
  const token = values.token ?? process.env.AGENTQ_TOKEN;
  const missing = ["target", "proto-dir", "googleapis-dir"].filter((name) => !values[name]);
  if (!token) missing.push("token (or AGENTQ_TOKEN)");
  if (missing.length > 0) {
    throw new Error(`missing required option(s): ${missing.join(", ")}`);
  }
  return {
    target: values.target,
    token,
    protoDir: path.resolve(values["proto-dir"]),
    googleapisDir: path.resolve(values["googleapis-dir"]),
  };
}

function loadServices(protoDir, googleapisDir) {
  const definition = protoLoader.loadSync(
    ["agentq/v1/agent_service.proto", "agentq/v1/job_service.proto"],
    {
      includeDirs: [protoDir, googleapisDir],
      keepCase: true, // field names exactly as in the .proto files
      enums: String, // JobStatus as its name, e.g. "JOB_STATUS_COMPLETED"
      longs: String, // int64 (latency_ms) without losing precision
      defaults: true, // unset scalars read as their proto3 defaults
      oneofs: true,
    },
  );
  const v1 = grpc.loadPackageDefinition(definition).agentq.v1;
  return { AgentService: v1.AgentService, JobService: v1.JobService };
}

function bearer(token) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

// One unary call as a promise, with a deadline.
function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_DEADLINE_MS);
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) {
        reject(new Error(`${method} failed: ${grpcCodeName(error.code)}: ${error.details}`));
      } else {
        resolve(response);
      }
    });
  });
}

function grpcCodeName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function pollUntilFinished(jobs, jobId, metadata) {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  for (;;) {
    const { job } = await call(jobs, "GetJob", { job_id: jobId }, metadata);
    if (FINISHED.has(job.status)) return job;
    if (Date.now() > deadline) {
      throw new Error(`job ${jobId} still ${job.status} after ${POLL_TIMEOUT_MS / 1000} s`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

// GetJob with no authorization metadata at all; reports whatever status comes back.
function probeWithoutToken(jobs, jobId) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + CALL_DEADLINE_MS);
    jobs.GetJob({ job_id: jobId }, new grpc.Metadata(), { deadline }, (error) => {
      resolve(
        error
          ? { code: grpcCodeName(error.code), details: error.details }
          : { code: "OK", details: "" },
      );
    });
  });
}

async function runFlow({ target, token, protoDir, googleapisDir }) {
  const { AgentService, JobService } = loadServices(protoDir, googleapisDir);
  const credentials = grpc.credentials.createInsecure();
  const agents = new AgentService(target, credentials);
  const jobs = new JobService(target, credentials);
  const metadata = bearer(token);
  try {
    const { agent } = await call(
      agents,
      "CreateAgent",
      { name: "polyglot bot", role: "You answer briefly." },
      metadata,
    );
    const ack = await call(
      agents,
      "Execute",
      { agent_id: agent.id, prompt: "What is the capital of France?" },
      metadata,
    );
    if (ack.response !== `Job queued: ${ack.job_id}`) {
      throw new Error(`Execute response ${JSON.stringify(ack.response)} does not name job ${ack.job_id}`);
    }
    const job = await pollUntilFinished(jobs, ack.job_id, metadata);
    if (job.status !== "JOB_STATUS_COMPLETED") {
      throw new Error(`job ${job.job_id} ended ${job.status}: ${job.error ?? "no error given"}`);
    }
    const unauthenticated = await probeWithoutToken(jobs, ack.job_id);
    return {
      agent_id: agent.id,
      job_id: job.job_id,
      status: job.status,
      response: job.result.response,
      tokens_used: job.result.tokens_used,
      context_hash: job.result.context_hash,
      unauthenticated,
    };
  } finally {
    agents.close();
    jobs.close();
  }
}

try {
  const outcome = await runFlow(options());
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
} catch (error) {
  process.stderr.write(`client.mjs: ${error.message}\n`);
  process.exitCode = 1;
}

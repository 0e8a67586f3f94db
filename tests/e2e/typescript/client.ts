// A TypeScript client of agentq on the stubs that `buf generate` makes from proto/.
//
// Nothing here is written by hand from the contract: the messages, the enums and the two
// services come from build/gen/ts/ (@bufbuild/protoc-gen-es), and the calls go over gRPC
// (HTTP/2) with @connectrpc/connect-node. It runs the create -> execute -> poll flow of
// docs/contract.md §3, then an Execute with an empty prompt, and prints one JSON line with
// what it saw. Any failure of the flow exits non-zero with the error on stderr.
//
// Usage, in a directory with these files and copies of the repository's proto/,
// third_party/googleapis/, buf.yaml and buf.gen.yaml (what test_typescript_client.py makes):
//   npm ci && npx buf generate && npx tsc -p . && node dist/client.js --target HOST:PORT [--token JWT]
//
// The token may also come from the environment variable AGENTQ_TOKEN, which keeps it out
// of the process list.

import { parseArgs } from "node:util";

import { create } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  AgentService,
  CreateAgentRequestSchema,
  ExecuteRequestSchema,
  type ExecuteResponse,
} from "./build/gen/ts/agentq/v1/agent_service_pb.js";
import { JobStatus, JobStatusSchema, type Job } from "./build/gen/ts/agentq/v1/job_pb.js";
import { GetJobRequestSchema, JobService } from "./build/gen/ts/agentq/v1/job_service_pb.js";

const CALL_TIMEOUT_MS = 10_000;
const POLL_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 100;
const FINISHED: ReadonlySet<JobStatus> = new Set([
  JobStatus.COMPLETED,
  JobStatus.FAILED,
  JobStatus.CANCELLED,
]);

interface Options {
  target: string;
  token: string;
}

// What the bad request came back with: the status and the google.rpc details it carried.
interface Refusal {
  code: string;
  message: string;
  details: string[];
  reason: string;
  violations: [string, string][];
}

interface Outcome {
  agent_id: string;
  agent_name: string;
  agent_role: string;
  ack_job_id: string;
  ack_status: string;
  ack_response: string;
  job_id: string;
  job_agent_id: string;
  status: string;
  response: string;
  prompt: string;
  success: boolean;
  tokens_used: number;
  context_hash: string;
  empty_prompt: Refusal;
}

function options(): Options {
  const { values } = parseArgs({
    options: { target: { type: "string" }, token: { type: "string" } },
  });
  const target = values.target;
  const token = values.token ?? process.env["AGENTQ_TOKEN"];
  if (target === undefined || !token) {
    throw new Error("needs --target HOST:PORT and a token (--token or AGENTQ_TOKEN)");
  }
  return { target, token };
}

// The enum value's name as the .proto file spells it, e.g. "JOB_STATUS_COMPLETED".
function statusName(status: JobStatus): string {
  return JobStatusSchema.value[status]?.name ?? `JOB_STATUS_${String(status)}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function pollUntilFinished(jobs: Client<typeof JobService>, jobId: string): Promise<Job> {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  for (;;) {
    const { job } = await jobs.getJob(create(GetJobRequestSchema, { jobId }), {
      timeoutMs: CALL_TIMEOUT_MS,
    });
    if (job === undefined) throw new Error(`GetJob(${jobId}) returned no job`);
    if (FINISHED.has(job.status)) return job;
    if (Date.now() > deadline) {
      throw new Error(`job ${jobId} still ${statusName(job.status)} after ${POLL_TIMEOUT_MS / 1000} s`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

// google.rpc.ErrorInfo's reason (field 1), read off the wire: only google/api is vendored,
// so there are no generated google/rpc types to decode it with.
function errorInfoReason(bytes: Uint8Array): string {
  const reader = new BinaryReader(bytes);
  let reason = "";
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) reason = reader.string();
    else reader.skip(wireType);
  }
  return reason;
}

// google.rpc.BadRequest's field violations (field 1: FieldViolation {field 1, description 2}).
function badRequestViolations(bytes: Uint8Array): [string, string][] {
  const reader = new BinaryReader(bytes);
  const violations: [string, string][] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field !== 1) {
      reader.skip(wireType);
      continue;
    }
    const violation = new BinaryReader(reader.bytes());
    let name = "";
    let description = "";
    while (violation.pos < violation.len) {
      const [inner, innerWireType] = violation.tag();
      if (inner === 1) name = violation.string();
      else if (inner === 2) description = violation.string();
      else violation.skip(innerWireType);
    }
    violations.push([name, description]);
  }
  return violations;
}

function refusal(error: ConnectError): Refusal {
  const found: Refusal = {
    // "InvalidArgument" as gRPC names it: "INVALID_ARGUMENT".
    code: Code[error.code].replace(/(?<=[a-z])(?=[A-Z])/g, "_").toUpperCase(),
    message: error.rawMessage,
    details: [],
    reason: "",
    violations: [],
  };
  for (const detail of error.details) {
    // Details the client has no schema for arrive as their type name and raw bytes.
    if (!("type" in detail)) continue;
    found.details.push(detail.type);
    if (detail.type === "google.rpc.ErrorInfo") found.reason = errorInfoReason(detail.value);
    if (detail.type === "google.rpc.BadRequest") found.violations = badRequestViolations(detail.value);
  }
  return found;
}

// Execute with an empty prompt must be refused; anything else is a failure of the client.
async function executeWithEmptyPrompt(
  agents: Client<typeof AgentService>,
  agentId: string,
): Promise<Refusal> {
  let ack: ExecuteResponse;
  try {
    ack = await agents.execute(create(ExecuteRequestSchema, { agentId, prompt: "" }), {
      timeoutMs: CALL_TIMEOUT_MS,
    });
  } catch (error) {
    return refusal(ConnectError.from(error));
  }
  throw new Error(`Execute with an empty prompt was accepted as job ${ack.jobId}`);
}

async function runFlow({ target, token }: Options): Promise<Outcome> {
  const bearer: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createGrpcTransport({ baseUrl: `http://${target}`, interceptors: [bearer] });
  const agents = createClient(AgentService, transport);
  const jobs = createClient(JobService, transport);

  const { agent } = await agents.createAgent(
    create(CreateAgentRequestSchema, { name: "typescript bot", role: "You answer briefly." }),
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  if (agent === undefined) throw new Error("CreateAgent returned no agent");
  const ack = await agents.execute(
    create(ExecuteRequestSchema, { agentId: agent.id, prompt: "What is the capital of France?" }),
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  const job = await pollUntilFinished(jobs, ack.jobId);
  if (job.status !== JobStatus.COMPLETED) {
    throw new Error(`job ${job.jobId} ended ${statusName(job.status)}: ${job.error ?? "no error given"}`);
  }
  const result = job.result;
  if (result === undefined) throw new Error(`completed job ${job.jobId} has no result`);
  return {
    agent_id: agent.id,
    agent_name: agent.name,
    agent_role: agent.role,
    ack_job_id: ack.jobId,
    ack_status: statusName(ack.status),
    ack_response: ack.response,
    job_id: job.jobId,
    job_agent_id: job.agentId,
    status: statusName(job.status),
    response: result.response,
    prompt: result.prompt,
    success: result.success,
    tokens_used: result.tokensUsed,
    context_hash: result.contextHash,
    empty_prompt: await executeWithEmptyPrompt(agents, agent.id),
  };
}

try {
  const outcome = await runFlow(options());
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
} catch (error) {
  process.stderr.write(`client.ts: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}

// An OTLP/HTTP trace receiver for the specs (issue 25), built on the
// official OpenTelemetry JS protobuf definitions
// (@opentelemetry/otlp-transformer, pinned in package.json): each request
// is checked as OTLP's JSON encoding says (camelCase keys, integer enums,
// 64-bit integers as decimal strings, ids as hex of the right length),
// then turned into the protobuf message a collector decodes, encoded,
// decoded again and verified. A request that fails either is answered 400,
// as a collector would, and kept with its error.
//
//   node otlp_receiver.mjs PORT_FILE
// listens on 127.0.0.1 (a free port, written to PORT_FILE) and serves:
//   POST /v1/traces   the export; answers 200 {} unless scripted
//   POST /control     {"script": [{"status": 503, "retryAfter": "0",
//                     "body": "..."} | {"hang": true}]}: the next answers,
//                     in order (hang: none at all)
//   GET  /received    {"requests": [{headers, spans, resource, error}],
//                     "others": [{method, path, headers}]}
// Any other path is recorded in "others" and answered 200 {"ok": true}
// (it stands in for a webhook or an agent's HTTP tool).
import http from "node:http";
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const root = require("@opentelemetry/otlp-transformer/build/src/generated/root");
const Req = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

const ID = { traceId: 32, spanId: 16, parentSpanId: 16 };
const INT64 = new Set(["startTimeUnixNano", "endTimeUnixNano", "timeUnixNano",
  "intValue"]);
const ENUM = new Set(["kind", "code"]);

// The rules protobufjs's fromObject does not check (it drops what it does
// not know, and takes base64 for ids): throws naming the first broken one.
function strict(x, path) {
  if (Array.isArray(x)) {
    x.forEach((v, i) => strict(v, `${path}[${i}]`));
    return;
  }
  if (x === null || typeof x !== "object") return;
  for (const [k, v] of Object.entries(x)) {
    const at = `${path}.${k}`;
    if (!/^[a-z][A-Za-z0-9]*$/.test(k)) throw new Error(`${at}: not a lowerCamelCase key`);
    if (k in ID) {
      if (typeof v !== "string" || !new RegExp(`^[0-9a-fA-F]{${ID[k]}}$`).test(v)
          || /^0+$/.test(v)) {
        throw new Error(`${at}: not ${ID[k]} hex digits, or all zero`);
      }
      x[k] = Buffer.from(v, "hex");
    } else if (INT64.has(k)) {
      if (typeof v !== "string" || !/^-?\d+$/.test(v)) throw new Error(`${at}: a 64-bit integer must be a decimal string`);
    } else if (ENUM.has(k)) {
      if (!Number.isInteger(v)) throw new Error(`${at}: an enum must be an integer`);
    } else {
      strict(v, at);
    }
  }
}

const plainValue = (v) => {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values || []).map(plainValue);
  if (v.kvlistValue) return attrs(v.kvlistValue.values);
  return null;
};
const attrs = (list) => Object.fromEntries((list || []).map((a) => [a.key, plainValue(a.value || {})]));
const hex = (b) => (b && b.length ? Buffer.from(b).toString("hex") : undefined);

// The decoded message as the specs read it.
function report(msg) {
  const o = Req.toObject(msg, { longs: String, enums: Number, bytes: Array });
  const spans = [];
  let resource = {};
  for (const rs of o.resourceSpans || []) {
    resource = attrs(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        spans.push({
          traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId),
          flags: s.flags, name: s.name, kind: s.kind, scope: ss.scope && ss.scope.name,
          start: s.startTimeUnixNano, end: s.endTimeUnixNano,
          attributes: attrs(s.attributes),
          events: (s.events || []).map((e) => ({ name: e.name, time: e.timeUnixNano, attributes: attrs(e.attributes) })),
          links: (s.links || []).map((l) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId), attributes: attrs(l.attributes) })),
          status: s.status || {},
        });
      }
    }
  }
  return { spans, resource };
}

const requests = [];
const others = [];
let script = [];

function send(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
}

function traces(req, body, res) {
  const headers = req.headers;
  const next = script.shift();
  if (next && next.hang) {
    requests.push({ headers, answered: "never", spans: [] });
    return; // a collector that takes the request and never answers
  }
  let decoded;
  try {
    if ((headers["content-type"] || "").split(";")[0].trim() !== "application/json") {
      throw new Error(`content-type ${headers["content-type"]}: spool sends application/json`);
    }
    const json = JSON.parse(body);
    strict(json, "$");
    const msg = Req.fromObject(json);
    const again = Req.decode(Req.encode(msg).finish());
    const err = Req.verify(again);
    if (err) throw new Error(err);
    decoded = report(again);
  } catch (e) {
    requests.push({ headers, error: String(e.message), spans: [] });
    return send(res, 400, { code: 3, message: String(e.message) });
  }
  if (next && next.status !== 200) {
    requests.push({ headers, answered: next.status, spans: decoded.spans });
    const extra = next.retryAfter !== undefined ? { "Retry-After": String(next.retryAfter) } : {};
    return send(res, next.status, next.body || { code: 14, message: "scripted" }, extra);
  }
  requests.push({ headers, answered: 200, ...decoded });
  return send(res, 200, (next && next.body) || "{}");
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    if (req.method === "POST" && req.url === "/v1/traces") return traces(req, body, res);
    if (req.method === "POST" && req.url === "/control") {
      script = JSON.parse(body).script || [];
      return send(res, 200, { ok: true });
    }
    if (req.method === "GET" && req.url === "/received") return send(res, 200, { requests, others });
    others.push({ method: req.method, path: req.url, headers: req.headers });
    return send(res, 200, { ok: true });
  });
});
server.listen(0, "127.0.0.1", () => {
  fs.writeFileSync(process.argv[2], String(server.address().port));
});
process.on("SIGTERM", () => process.exit(0));

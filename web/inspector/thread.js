// One thread: what it waits for (and the forms to answer it), then its
// timeline, step by step, as it happens: each model call (model, tokens,
// latency, the tool calls it asked for), each tool's arguments and result,
// people's requests and answers, errors, sub-agents (linked).
import { api, follow } from "/ui/api.js";
import { h, fill, time, json, folded, badge } from "/ui/dom.js";
import { actionsFor } from "/ui/actions.js";

const NOTEWORTHY = new Set(["error", "human_request", "failed", "cancelled"]);

export async function threadPage({ app, main, signal }, id) {
  const header = h("div", { class: "thread-head" });
  const actions = h("div");
  const timeline = h("ol", { class: "timeline", "aria-label": "Timeline" });
  const onlyNoteworthy = h("input", { id: "only-noteworthy", type: "checkbox", onchange: () => draw() });
  let thread;

  fill(main,
    h("p", {}, h("a", { href: "#/threads", text: "← Threads" })),
    header, actions,
    h("div", { class: "row" },
      onlyNoteworthy, h("label", { for: "only-noteworthy", text: "Only failed or waiting steps" })),
    timeline);

  async function load() {
    thread = await api("GET", `/v1/threads/${encodeURIComponent(id)}`);
    draw();
  }

  function draw() {
    const t = thread;
    const usage = t.usage || {};
    fill(header,
      h("h1", {}, "Thread ", h("code", { text: t.id })),
      h("dl", { class: "facts" },
        fact("Agent", t.agent), fact("Status", badge(t.status)),
        fact("Steps", t.step), fact("Tokens", `${usage.input_tokens || 0} in, ${usage.output_tokens || 0} out`),
        t.parent ? fact("Parent", h("a", { href: `#/threads/${t.parent}`, text: t.parent })) : null,
        t.result !== undefined ? fact("Result", typeof t.result === "string" ? t.result : json(t.result)) : null,
        t.error ? fact("Error", t.error) : null),
      h("div", { class: "row" },
        t.status === "running" || t.status === "waiting"
          ? h("button", { type: "button", class: "danger", text: "Cancel the thread", onclick: cancel }) : null,
        h("button", { type: "button", text: "Export as JSON lines", onclick: exportLines })));
    fill(actions, t.status === "waiting" ? actionsFor(t, load) : null);
    drawTimeline();
  }

  function drawTimeline() {
    const steps = new Map();
    for (const ev of thread.events) {
      if (!steps.has(ev.step)) steps.set(ev.step, []);
      steps.get(ev.step).push(ev);
    }
    const items = [];
    for (const [step, events] of steps) {
      const noteworthy = events.some((e) => NOTEWORTHY.has(e.type));
      if (onlyNoteworthy.checked && !noteworthy) continue;
      const took = events.length > 1 ? events[events.length - 1].at - events[0].at : 0;
      items.push(h("li", { class: `step${noteworthy ? " noteworthy" : ""}` },
        h("h2", { text: step === 0 ? "Start" : `Step ${step}` }, took ? h("span", { class: "took", text: ` ${took} ms` }) : null),
        h("ul", { class: "events" }, events.map(eventItem))));
    }
    fill(timeline, items.length ? items : h("li", { text: "Nothing to show." }));
  }

  async function cancel(ev) {
    ev.target.disabled = true;
    await api("POST", `/v1/threads/${thread.id}/cancel`, {});
    await load();
  }

  function exportLines() {
    const text = thread.events.map((e) => JSON.stringify(e)).join("\n") + "\n";
    const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" })), download: `${thread.id}.jsonl` });
    a.click();
    URL.revokeObjectURL(a.href);
  }

  await load();
  // Live: the thread's durable events as they are stored.
  let stale = false;
  app.onLive = () => { if (stale) { stale = false; load(); } };
  follow(`/v1/threads/${encodeURIComponent(id)}/stream?after=${thread.events.length}`, () => {
    stale = true;
    if (app.live) app.onLive();
  }, signal).catch(() => {});
}

function fact(name, value) {
  return [h("dt", { text: name }), h("dd", {}, value)];
}

function eventItem(ev) {
  const d = ev.data || {};
  const at = h("time", { text: time(ev.at) });
  const head = (label, ...rest) => h("div", { class: "event-head" }, h("span", { class: `kind ${ev.type}`, text: label }), ...rest, at);
  switch (ev.type) {
    case "input":
      return h("li", { class: "event" }, head("input"), folded(d.input));
    case "model_call":
      return h("li", { class: "event" },
        head("model", ` ${d.provider || ""} ${d.model || ""}`),
        h("p", { class: "meta", text: `${d.usage?.input_tokens ?? "?"} tokens in, ${d.usage?.output_tokens ?? "?"} out · ${d.latency_ms ?? "?"} ms · ${d.finish_reason || ""}${d.retries ? ` · ${d.retries} retries` : ""}` }),
        d.text ? folded(d.text) : null,
        (d.tool_calls || []).map((c) => h("p", { class: "call" }, "asks for ", h("code", { text: c.name }), " ", h("code", { text: c.arguments }))));
    case "intent":
      return h("li", { class: "event" }, head("tool call", " ", h("code", { text: d.name })), folded(json(d.args)));
    case "tool_result":
      return h("li", { class: "event" }, head("tool result", " ", h("code", { text: d.name })),
        folded(typeof d.result === "string" ? d.result : json(d.result)));
    case "human_request":
      return h("li", { class: "event waiting" }, head("asks a person", " ", d.kind || ""),
        h("p", { text: d.question || (d.name ? `approval of ${d.name}` : d.event || "") }),
        d.args ? folded(json(d.args)) : null);
    case "human_response":
      return h("li", { class: "event" }, head("a person answered", ` by ${d.by || "?"}`),
        h("p", { text: d.answer ?? (d.approved === true ? "approved" : d.approved === false ? `rejected${d.reason ? ": " + d.reason : ""}` : d.event || "") }),
        d.args ? folded(json(d.args)) : null);
    case "error":
      return h("li", { class: "event failed" }, head("error", d.name ? h("code", { text: ` ${d.name}` }) : null), h("p", { text: d.error || json(d) }));
    case "done":
      return h("li", { class: "event" }, head("done"), folded(typeof d.result === "string" ? d.result : json(d.result)));
    case "failed":
    case "cancelled":
      return h("li", { class: "event failed" }, head(ev.type), h("p", { text: d.error || d.reason || "" }));
    case "agent_call":
    case "agent_result":
      return h("li", { class: `event${d.status === "failed" ? " failed" : ""}` },
        head(ev.type === "agent_call" ? "calls a sub-agent" : "sub-agent answered", " ", h("code", { text: d.agent || "" })),
        d.thread ? h("p", {}, "thread ", h("a", { href: `#/threads/${d.thread}`, text: d.thread })) : null,
        folded(ev.type === "agent_call" ? d.input : (typeof d.result === "string" ? d.result : json(d.result ?? d.error ?? d.status))));
    case "compaction":
      return h("li", { class: "event" }, head("context compacted"), folded(d.summary || json(d)));
    default:
      return h("li", { class: "event" }, head(ev.type), folded(json(d)));
  }
}

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
  const waterfall = h("div", { class: "waterfall" });
  const onlyNoteworthy = h("input", { id: "only-noteworthy", type: "checkbox", onchange: () => drawTimeline() });
  const problem = h("p", { class: "error", role: "alert" });
  const opened = new Set(); // the steps whose request is open: kept open across redraws
  let thread, waitingKey = null;

  fill(main,
    h("p", {}, h("a", { href: "#/threads", text: "← Threads" })),
    header, problem, actions,
    h("div", { class: "row" },
      onlyNoteworthy, h("label", { for: "only-noteworthy", text: "Only failed or waiting steps" })),
    waterfall, timeline);

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
    // The forms stay as they are while the thread waits for the same thing
    // (a redraw must not wipe what a person is typing). A sub-agent's wait
    // shows on its parent too, and is answered there.
    const key = t.status === "waiting" ? JSON.stringify(t.waiting_for) : null;
    if (key !== waitingKey) {
      waitingKey = key;
      fill(actions, !key ? null : t.parent
        ? h("p", { class: "actions" }, "It waits for ", t.waiting_for?.text || "a person",
          "; answer it on its parent thread, ", h("a", { href: `#/threads/${t.parent}`, text: t.parent }), ".")
        : actionsFor(t, load));
    }
    drawTimeline();
  }

  function drawTimeline() {
    const steps = new Map();
    for (const ev of thread.events) {
      if (!steps.has(ev.step)) steps.set(ev.step, []);
      steps.get(ev.step).push(ev);
    }
    const items = [];
    let version = null;
    for (const [step, events] of steps) {
      // A new version of the agent (a hot reload) from this step on.
      const v = events[0].v;
      if (version && v && v !== version) {
        items.push(h("li", { class: "version-switch", text: `The agent's version ${v} from here (it was ${version})` }));
      }
      version = v || version;
      const noteworthy = events.some((e) => NOTEWORTHY.has(e.type));
      if (onlyNoteworthy.checked && !noteworthy) continue;
      const took = events.length > 1 ? events[events.length - 1].at - events[0].at : 0;
      const asked = events.some((e) => e.type === "model_call");
      items.push(h("li", { class: `step${noteworthy ? " noteworthy" : ""}` },
        h("h2", { text: step === 0 ? "Start" : `Step ${step}` }, took ? h("span", { class: "took", text: ` ${took} ms` }) : null),
        asked ? requestOf(step) : null,
        h("ul", { class: "events" }, events.map((ev) => eventItem(ev, fork)))));
    }
    fill(waterfall, drawWaterfall(steps));
    fill(timeline, items.length ? items : h("li", { text: "Nothing to show." }));
  }

  // The exact request of a step, loaded when opened.
  function requestOf(step) {
    const body = h("div", { text: "Loading…" });
    const box = h("details", { class: "request" }, h("summary", { text: "The request as sent" }), body);
    box.addEventListener("toggle", async () => {
      if (box.open) opened.add(step); else opened.delete(step);
      if (!box.open || box.dataset.loaded) return;
      box.dataset.loaded = "1";
      try {
        const v = await api("GET", `/v1/threads/${encodeURIComponent(thread.id)}/steps/${step}`);
        fill(body,
          // Rendered again by the agent's version of now: say so when the
          // step ran another.
          v.version && v.version !== v.agent_version
            ? h("p", { class: "error", text: `The step ran version ${v.version}; this is what version ${v.agent_version} builds from the same events, which may differ from what was sent.` })
            : null,
          h("p", { class: "meta", text: `POST ${v.endpoint.url} · ${v.endpoint.model} (${v.endpoint.provider})${v.budget ? ` · window ${v.total} of ${v.budget} tokens` : ""}${v.seen ? "" : " · not sent yet"}` }),
          h("table", { class: "tokens" },
            h("thead", {}, h("tr", {}, ["Event", "Type", "Tokens", "Shown", "Policy"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody", {}, v.events.map((r) => h("tr", {},
              h("td", { text: r.seq }), h("td", { text: r.type }), h("td", { text: r.tokens ?? "" }),
              h("td", { text: r.shown ?? "" }), h("td", { text: r.action ? r.action + (r.into ? ` into event ${r.into}` : "") : "" }))))),
          h("pre", { text: json(v.body) }));
      } catch (e) {
        fill(body, h("p", { class: "error", role: "alert", text: e.message }));
      }
    });
    if (opened.has(step)) box.open = true;
    return box;
  }

  async function fork(seq) {
    problem.textContent = "";
    try {
      const t = await api("POST", `/v1/threads/${encodeURIComponent(thread.id)}/fork`, { at: seq });
      location.hash = `#/threads/${t.id}`;
    } catch (e) {
      problem.textContent = `Not forked: ${e.message}`;
    }
  }

  async function cancel(ev) {
    problem.textContent = "";
    ev.target.disabled = true;
    try {
      await api("POST", `/v1/threads/${thread.id}/cancel`, {});
      await load();
    } catch (e) {
      problem.textContent = `Not cancelled: ${e.message}`;
      ev.target.disabled = false;
    }
  }

  function exportLines() {
    const text = thread.events.map((e) => JSON.stringify(e)).join("\n") + "\n";
    const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" })), download: `${thread.id}.jsonl` });
    a.click();
    URL.revokeObjectURL(a.href);
  }

  await load();
  if (signal.aborted) return;
  // Live: the thread's durable events as they are stored. (A reload that
  // fails leaves the page as it is; the next event tries again.)
  let stale = false;
  app.onLive = () => { if (stale) { stale = false; load().catch(() => {}); } };
  follow(`/v1/threads/${encodeURIComponent(id)}/stream?after=${thread.events.length}`, () => {
    stale = true;
    if (app.live) app.onLive();
  }, signal).catch(() => {});
}

// How long each step took, as bars on one scale: where the time went.
function drawWaterfall(steps) {
  const all = [...steps.values()].flat();
  if (all.length < 2) return null;
  const start = all[0].at, span = Math.max(1, all[all.length - 1].at - start);
  return h("figure", {},
    h("figcaption", { text: `Steps over time (${span} ms in all)` }),
    [...steps].filter(([step]) => step > 0).map(([step, events]) => {
      const from = events[0].at - start, took = events[events.length - 1].at - events[0].at;
      const bar = h("span", { class: "took-bar" });
      bar.style.marginLeft = `${(100 * from) / span}%`;
      bar.style.width = `${Math.max(0.5, (100 * took) / span)}%`;
      return h("div", { class: "lane", title: `step ${step}: ${took} ms` },
        h("span", { class: "lane-name", text: `step ${step}` }), h("span", { class: "track" }, bar),
        h("span", { class: "took", text: `${took} ms` }));
    }));
}

function fact(name, value) {
  return [h("dt", { text: name }), h("dd", {}, value)];
}

function eventItem(ev, fork) {
  const d = ev.data || {};
  const at = [h("button", { type: "button", class: "small", title: `A new thread from events 1 to ${ev.seq}`,
    text: "Fork here", "aria-label": `Fork a new thread at event ${ev.seq}`, onclick: () => fork(ev.seq) }),
    h("time", { text: time(ev.at) })];
  const head = (label, ...rest) => h("div", { class: "event-head" }, h("span", { class: `kind ${ev.type}`, text: label }), ...rest, at);
  switch (ev.type) {
    case "input":
      return h("li", { class: "event" }, head("input"), folded(d.input));
    case "model_call":
      return h("li", { class: "event" },
        head("model", ` ${d.provider || ""} ${d.model || ""}`),
        h("p", { class: "meta", text: `${d.usage?.input_tokens ?? "?"} tokens in, ${d.usage?.output_tokens ?? "?"} out · ${d.latency_ms ?? "?"} ms${d.cost_usd ? ` · $${d.cost_usd.toFixed(4)}` : ""} · ${d.finish_reason || ""}` }),
        // Retries and fallbacks: every attempt the call took, when more than one.
        d.attempts ? h("ol", { class: "attempts", "aria-label": "Attempts" }, d.attempts.map((a) => h("li", {
          text: `${a.provider || ""} ${a.model || ""}: ${a.status ?? "no answer"}${a.error ? ` (${a.error})` : ""} · ${a.latency_ms ?? "?"} ms${a.retry_in_ms ? ` · retried after ${a.retry_in_ms} ms` : ""}` }))) : null,
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

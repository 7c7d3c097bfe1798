// Threads: filtered by status and agent, found by id, paged, and kept
// live by the API's notices (a thread starts, waits or ends).
import { api, keepLive } from "/ui/api.js";
import { h, fill, time, badge } from "/ui/dom.js";

const STATUSES = ["", "running", "waiting", "done", "failed", "cancelled"];

export async function threadsPage({ app, main, signal }) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = { status: params.get("status") || "", agent: params.get("agent") || "", cursors: [] };
  const agents = (await api("GET", "/v1/agents")).agents;

  const status = h("select", { id: "f-status", onchange: () => { state.status = status.value; reload(); } },
    STATUSES.map((s) => h("option", { value: s, text: s || "any status", selected: s === state.status })));
  // (An agent the filter names that is not listed, a deleted one, still
  // shows as the filter in use.)
  const names = agents.map((a) => a.name);
  if (state.agent && !names.includes(state.agent)) names.push(state.agent);
  const agent = h("select", { id: "f-agent", onchange: () => { state.agent = agent.value; reload(); } },
    h("option", { value: "", text: "any agent" }),
    names.map((n) => h("option", { value: n, text: n, selected: n === state.agent })));
  const search = h("input", { id: "f-id", type: "search", placeholder: "t_...", autocomplete: "off" });
  const rows = h("tbody");
  const counts = h("div", { class: "counts", role: "group", "aria-label": "Threads by status" });
  const older = h("button", { type: "button", text: "Older", hidden: true, onclick: () => page(state.next) });
  const newest = h("button", { type: "button", text: "Newest", hidden: true, onclick: () => page(null) });

  fill(main,
    h("h1", { text: "Threads" }),
    h("form", { class: "filters", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      if (search.value.trim()) location.hash = `#/threads/${encodeURIComponent(search.value.trim())}`;
    } },
      h("label", { for: "f-status", text: "Status" }), status,
      h("label", { for: "f-agent", text: "Agent" }), agent,
      h("label", { for: "f-id", text: "Thread id" }), search,
      h("button", { type: "submit", text: "Open" })),
    counts,
    h("table", { class: "threads" },
      h("caption", { class: "visually-hidden", text: "Threads, newest first" }),
      h("thead", {}, h("tr", {}, ["Thread", "Agent", "Status", "Events", "Created", "Updated"].map((t) => h("th", { scope: "col", text: t })))),
      rows),
    h("div", { class: "paging" }, newest, older));

  async function page(cursor) {
    const q = new URLSearchParams({ limit: "50", counts: "true" });
    if (state.status) q.set("status", state.status);
    if (state.agent) q.set("agent", state.agent);
    if (cursor) q.set("cursor", cursor);
    const list = await api("GET", `/v1/threads?${q}`);
    state.cursor = cursor;
    state.next = list.next_cursor;
    fill(rows, list.threads.map((t) => h("tr", { "data-thread": t.id },
      h("td", {}, h("a", { href: `#/threads/${t.id}`, text: t.id })),
      h("td", { text: t.agent }),
      h("td", {}, badge(t.status)),
      h("td", { text: t.events ?? "" }),
      h("td", { text: time(t.created_at) }),
      h("td", { text: time(t.updated_at) }))));
    fill(counts, STATUSES.slice(1).map((s) => h("button", {
      type: "button", class: `count${s === state.status ? " chosen" : ""}`, "aria-pressed": String(s === state.status),
      onclick: () => { state.status = s === state.status ? "" : s; status.value = state.status; reload(); },
    }, badge(s), ` ${list.counts[s]}`)));
    older.hidden = !list.next_cursor;
    newest.hidden = !cursor;
  }

  function reload() {
    const q = new URLSearchParams();
    if (state.status) q.set("status", state.status);
    if (state.agent) q.set("agent", state.agent);
    history.replaceState(null, "", `#/threads${q.toString() ? "?" + q : ""}`);
    return page(null);
  }

  await page(null);
  // Live: the first page again (an older page stays as it is).
  keepLive(app, signal, () => { if (!state.cursor) page(null); });
}

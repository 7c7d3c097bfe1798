// The project's agents: the version each runs, the error of an edit that
// broke one, and a reload that reads agents/ again now.
import { api } from "/ui/api.js";
import { h, fill, json } from "/ui/dom.js";

export async function agentsPage({ main }) {
  const rows = h("tbody");
  const report = h("div", { "aria-live": "polite" });
  const reload = h("button", { type: "button", text: "Reload agents", onclick: async () => {
    reload.disabled = true;
    try {
      fill(report, h("h2", { text: "Reload" }), h("pre", { text: json(await api("POST", "/v1/reload", {})) }));
      await load();
    } finally {
      reload.disabled = false;
    }
  } });
  fill(main, h("h1", { text: "Agents" }), h("div", { class: "row" }, reload),
    h("table", {}, h("thead", {}, h("tr", {}, ["Agent", "Version", "Problem"].map((t) => h("th", { scope: "col", text: t })))), rows),
    report);

  async function load() {
    const { agents } = await api("GET", "/v1/agents");
    fill(rows, agents.map((a) => h("tr", { class: a.error ? "broken" : "" },
      h("td", {}, h("a", { href: `#/threads?agent=${encodeURIComponent(a.name)}`, text: a.name })),
      h("td", {}, h("code", { text: a.version || "" })),
      h("td", { class: a.error ? "error" : "", text: a.error || "" }))));
  }
  await load();
}

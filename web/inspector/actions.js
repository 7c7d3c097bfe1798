// What a person does for a thread that waits: approve (with the
// arguments as they are, or edited: the server checks them against the
// tool's schema, and its error shows here), reject with a reason, answer
// a question, send the outside event it waits for.
import { api } from "/ui/api.js";
import { h, json } from "/ui/dom.js";

let forms = 0;

export function actionsFor(thread, onDone) {
  const w = thread.waiting_for;
  if (!w) return null;
  const n = ++forms;
  const error = h("p", { class: "error", role: "alert" });
  const send = async (body, button) => {
    error.textContent = "";
    button.disabled = true;
    try {
      await api("POST", `/v1/threads/${thread.id}/events`, body);
      onDone();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  };
  const box = h("section", { class: "actions", "aria-label": `Waiting: ${w.text}` },
    h("h2", { text: w.kind === "approval" ? "Waits for approval" : w.kind === "ask" ? "Waits for an answer" : "Waits for an event" }),
    h("p", { class: "waiting-text", text: w.text }));
  if (w.kind === "approval") {
    const args = h("textarea", { id: `args-${n}`, rows: 6, spellcheck: false, text: json(w.args || {}) });
    const reason = h("input", { id: `reason-${n}`, type: "text", autocomplete: "off" });
    const approve = h("button", { type: "button", text: "Approve", onclick: () => {
      let edited;
      try { edited = JSON.parse(args.value); } catch (e) {
        error.textContent = `The arguments are not JSON: ${e.message}`;
        return;
      }
      const same = JSON.stringify(edited) === JSON.stringify(w.args || {});
      send(same ? { type: "approve" } : { type: "approve", args: edited }, approve);
    } });
    const reject = h("button", { type: "button", class: "danger", text: "Reject", onclick: () =>
      send({ type: "reject", reason: reason.value || undefined }, reject) });
    box.append(
      h("label", { for: `args-${n}`, text: `Arguments of ${w.name} (edit them to approve with others)` }), args,
      h("div", { class: "row" }, approve),
      h("label", { for: `reason-${n}`, text: "Reason, to reject" }), reason,
      h("div", { class: "row" }, reject));
  } else if (w.kind === "ask") {
    const answer = h("textarea", { id: `answer-${n}`, rows: 3 });
    const button = h("button", { type: "button", text: "Send the answer", onclick: () => {
      if (!answer.value.trim()) { error.textContent = "Write an answer first."; return; }
      send({ type: "answer", text: answer.value }, button);
    } });
    box.append(h("label", { for: `answer-${n}`, text: "Answer" }), answer, h("div", { class: "row" }, button));
  } else {
    const data = h("textarea", { id: `data-${n}`, rows: 4, spellcheck: false, text: "{}" });
    const button = h("button", { type: "button", text: `Send ${w.event}`, onclick: () => {
      let value;
      try { value = JSON.parse(data.value); } catch (e) {
        error.textContent = `The data is not JSON: ${e.message}`;
        return;
      }
      send({ type: "event", name: w.event, data: value }, button);
    } });
    box.append(h("label", { for: `data-${n}`, text: `Data of the event ${w.event}` }), data, h("div", { class: "row" }, button));
  }
  box.append(error);
  return box;
}

// The control API, with the token this tab keeps (sessionStorage: it goes
// when the tab closes, and no other site can read it).
const KEY = "spool.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token.get()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = null; }
  if (!res.ok) {
    const e = (value && value.error) || {};
    throw new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText);
  }
  return value;
}

// Follows an event stream of the API (EventSource cannot send the token):
// onEvent({ event, data, id }) for each, until `signal` aborts. It
// reconnects after a drop, from the last event it had.
export async function follow(path, onEvent, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${token.get()}` };
      if (last) headers["Last-Event-ID"] = last;
      const res = await fetch(path, { headers, signal });
      if (!res.ok) throw new ApiError(res.status, "stream", res.statusText);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let end;
        while ((end = buffered.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end).replace(/^\r?\n\r?\n/, "");
          const ev = { event: "message", data: "", id: null };
          for (const line of block.split(/\r?\n/)) {
            const at = line.indexOf(":");
            if (at === 0) continue;
            const field = at < 0 ? line : line.slice(0, at);
            const v = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
            if (field === "data") ev.data += (ev.data ? "\n" : "") + v;
            else if (field === "event") ev.event = v;
            else if (field === "id") ev.id = last = v;
          }
          if (ev.data) onEvent(ev);
          if (ev.event === "end") return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) throw e;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// Keeps a page of threads live: refresh() again when a thread starts,
// waits or ends (the API's notices), and every 5 s for what notices miss
// (those of other workers, or of the moment before the stream connects);
// not while updates are paused, but at once when they resume.
export function keepLive(app, signal, refresh) {
  if (signal.aborted) return; // (the page was left while it loaded)
  let stale = false;
  const touch = () => {
    stale = true;
    if (app.live) app.onLive();
  };
  app.onLive = () => {
    if (!stale || signal.aborted) return;
    stale = false;
    // A refresh that fails keeps the page as it is (the next one may work);
    // one refused for its token asks for the token.
    Promise.resolve().then(refresh).catch((e) => {
      if (e instanceof ApiError && e.status === 401) app.unauthorized();
    });
  };
  follow("/v1/events", (ev) => { if (ev.event.startsWith("thread.")) touch(); }, signal).catch(() => {});
  const timer = setInterval(() => { if (!signal.aborted) touch(); }, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));
}

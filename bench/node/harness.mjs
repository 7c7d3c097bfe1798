// What every Node contender shares: the harness interface (--base URL
// --runs R --concurrency C --steps K --warmup W --timeout-s S [--db F]),
// running R runs at most C at a time after W warm-ups, and the one JSON
// line of results (CPU and wall over the timed runs only).
import { cpuUsage, memoryUsage, hrtime } from "node:process";
import { readFileSync } from "node:fs";

export function parseArgs(args) {
  const opt = { concurrency: 1, steps: 10, warmup: 0, timeoutS: 60 };
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i], v = args[i + 1];
    if (k === "--base") opt.base = v;
    else if (k === "--runs") opt.runs = Number(v);
    else if (k === "--concurrency") opt.concurrency = Number(v);
    else if (k === "--steps") opt.steps = Number(v);
    else if (k === "--warmup") opt.warmup = Number(v);
    else if (k === "--timeout-s") opt.timeoutS = Number(v);
    else if (k === "--db") opt.db = v;
    else throw new Error(`unknown option ${k}`);
  }
  return opt;
}

async function batch(n, c, oneRun, answer) {
  let next = 0, failed = 0, bad = 0;
  async function worker() {
    while (next < n) {
      next++;
      try {
        const text = await oneRun();
        if (!String(text).includes(answer)) bad++;
      } catch (e) {
        failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
  return { failed, bad };
}

function rssKb() {
  const m = readFileSync("/proc/self/status", "utf8").match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : Math.round(memoryUsage().rss / 1024);
}

function hwmKb() {
  const m = readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/);
  return m ? Number(m[1]) : 0;
}

export async function runBatch(opt, oneRun) {
  const answer = `The answer is ${opt.steps}.`;
  if (opt.warmup > 0) await batch(opt.warmup, opt.concurrency, oneRun, answer);
  if (global.gc) global.gc();
  const rssBefore = rssKb();
  const c0 = cpuUsage(), t0 = hrtime.bigint();
  const deadline = new Promise((r) => setTimeout(() => r("timeout"),
    opt.timeoutS * 1000).unref());
  const result = await Promise.race([batch(opt.runs, opt.concurrency, oneRun,
    answer), deadline]);
  const wall = Number(hrtime.bigint() - t0) / 1e9;
  const c = cpuUsage(c0);
  const timedOut = result === "timeout";
  return { failed: timedOut ? 0 : result.failed,
    bad_answers: timedOut ? 0 : result.bad, timed_out: timedOut ? opt.runs : 0,
    wall_s: wall, cpu_user_s: c.user / 1e6, cpu_sys_s: c.system / 1e6,
    rss_before_kb: rssBefore, max_rss_kb: hwmKb() };
}

export function report(name, opt, r) {
  console.log(JSON.stringify({ contender: name, runs: opt.runs,
    warmup: opt.warmup, steps: opt.steps, ...r }));
}

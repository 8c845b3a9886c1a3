import { solver } from "./solver.js";

// Solve a challenge's proof-of-work within `budget` ms: in a Web Worker when the page allows one
// (so typing never stutters), otherwise on the main thread in short slices. Resolves to
// { n, s } (solution, milliseconds) or null when the budget ran out or nothing could run.
export function solve(win, prefix, difficulty, budget) {
  let started = Date.now();
  return new Promise((resolve) => {
    let done = (n) => {
      resolve(n >= 0 ? { n: n, s: Date.now() - started } : null);
      done = () => {};
    };
    let inline = () => {
      let s = solver(), from = 0, step = 4000;
      (function slice() {
        let n = s.search(prefix, difficulty, from, from + step);
        if (n >= 0 || Date.now() - started > budget) return done(n);
        from += step;
        setTimeout(slice, 0);
      })();
    };
    let worker, url, timer;
    try {
      url = win.URL.createObjectURL(new win.Blob(
        ["let s=(" + solver + ")();onmessage=function(e){postMessage(s.search.apply(0,e.data))}"],
        { type: "text/javascript" }
      ));
      worker = new win.Worker(url);
    } catch (e) {
      worker = null; // no Worker, or a CSP without blob: in worker-src
    }
    let stop = () => {
      clearTimeout(timer);
      if (worker) worker.terminate();
      try { win.URL.revokeObjectURL(url); } catch (e) { /* nothing to free */ }
    };
    if (!worker) return stop(), inline();
    timer = setTimeout(() => { stop(); done(-1); }, budget);
    worker.onmessage = (e) => { stop(); done(e.data); };
    // A worker refused after creation (CSP report, load error): fall back to the main thread.
    worker.onerror = (e) => { if (e && e.preventDefault) e.preventDefault(); stop(); inline(); };
    worker.postMessage([prefix, difficulty, 0, 4294967295]);
  });
}

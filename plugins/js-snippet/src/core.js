import { hints } from "./hints.js";
import { solve } from "./pow.js";

let FIELD = "activelead_token";
let HEADER = "X-Activelead-Token";
let CAP = 4e9; // report values are unsigned 32-bit on the server

// install(window, script) sets up window.activelead and protects the page's forms.
// Everything goes through `win` so tests can run it against a fresh jsdom window.
export function install(win, script) {
  let doc = win.document, nav = win.navigator || {};
  let log = (a, b) => {
    try { win.console.warn("Activelead:", a, b === undefined ? "" : b); } catch (e) { /* no console */ }
  };
  let safe = (fn) => {
    return (...a) => {
      try { return fn(...a); } catch (e) { log(e); }
    };
  };
  let prev = win.activelead;
  if (prev && prev.v) return prev; // the tag is on the page twice: the first one wins

  let ds = (script && script.dataset) || {};
  let src = script && script.src;
  let opts = {
    site: ds.site || "",
    scope: ds.scope || "all", // all: every POST form; marked: only form[data-activelead]
    endpoint: ds.endpoint || (src ? new win.URL("challenge", src).href : "/__activelead/challenge"),
    timeout: +ds.timeout || 5000, // challenge request, ms
    budget: +ds.budget || 10000, // proof-of-work time budget, ms
    onReady: null,
    onError: null
  };
  let states = new WeakMap();
  let explicit = new WeakMap(); // forms passed to protect(), with their options
  let page = {}; // state for token() without a form
  let pointer = 0, clicks = 0, untrusted = 0;
  let perf = win.performance;
  let now = () => { return perf && perf.now ? perf.now() : Date.now(); };

  let option = (st, name) => {
    let o = st.o;
    return o && o[name] != null ? o[name] : opts[name];
  };
  let report = (fn, st, arg) => {
    let cb = option(st, fn);
    if (typeof cb == "function") safe(cb)(arg, st.f);
  };
  let isProtected = (f) => {
    if (!f || f.tagName != "FORM") return false;
    if (explicit.has(f)) return true;
    let mark = f.getAttribute("data-activelead");
    if (mark == "off") return false;
    if (opts.scope == "marked") return mark != null;
    return mark != null || (f.getAttribute("method") || "").toLowerCase() == "post";
  };
  let state = (f) => {
    let st = states.get(f);
    if (!st) {
      st = { f: f, o: explicit.get(f), k: 0, v: 0, n: 0 };
      states.set(f, st);
      let input = f.querySelector("input[name=" + FIELD + "]");
      if (!input) {
        input = doc.createElement("input");
        input.type = "hidden";
        input.name = FIELD;
        f.appendChild(input);
      }
      st.input = input;
    }
    return st;
  };
  let formName = (st) => {
    let f = st.f, name = option(st, "form");
    if (name) return name;
    if (f && f.getAttribute) {
      // getAttribute: an <input name="action"> would shadow form.action
      name = f.getAttribute("data-activelead-form");
      return name || new win.URL(f.getAttribute("action") || "", doc.baseURI).pathname;
    }
    return win.location.pathname;
  };
  // The field value: the signed challenge, then what this browser saw (see README, "Token").
  let value = (st) => {
    let ch = st.ch;
    if (!ch) return "";
    let r = {
      k: st.k, p: pointer, c: clicks, v: st.v, f: st.n, i: st.i, d: Date.now() - st.t,
      u: untrusted, w: nav.webdriver ? 1 : 0, h: hints(win, untrusted)
    };
    if (ch.n != null) { r.n = ch.n; r.s = ch.s; }
    let out = [];
    for (let key in r) out.push(key + "=" + Math.min(Math.max(Math.round(r[key]) || 0, 0), CAP));
    return ch.token + "~" + out.join(",");
  };
  let fresh = (st) => {
    return st.ch && !st.spent && Date.now() < st.ch.exp;
  };

  let request = (st) => {
    let ctrl = win.AbortController ? new win.AbortController() : null;
    let timer = setTimeout(() => { if (ctrl) ctrl.abort(); }, option(st, "timeout"));
    // text/plain keeps this a "simple" CORS request: no preflight round trip. No cookies.
    return win.fetch(option(st, "endpoint"), {
      method: "POST", mode: "cors", credentials: "omit", cache: "no-store",
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ site: option(st, "site"), form: formName(st) }),
      signal: ctrl ? ctrl.signal : undefined
    }).then((r) => {
      clearTimeout(timer);
      if (!r.ok) throw new Error("challenge refused: HTTP " + r.status);
      return r.json();
    }, (e) => {
      clearTimeout(timer);
      throw e;
    });
  };
  // A challenge for this form, fetched once per use; resolves to it, or null on failure.
  let challenge = (st) => {
    if (fresh(st)) return Promise.resolve(st.ch);
    if (!st.p) {
      st.spent = 0;
      st.ch = null;
      let asked = Date.now();
      st.p = Promise.resolve().then(() => { return request(st); }).then((c) => {
        if (!c || typeof c.token != "string") throw new Error("bad challenge answer");
        let ch = { token: c.token, exp: asked + ((+c.expiresIn || 60) - 5) * 1000 };
        let d = c.pow && +c.pow.difficulty;
        if (!d) return ch;
        return solve(win, c.token + ":", d, option(st, "budget")).then((r) => {
          if (r) { ch.n = r.n; ch.s = r.s; } else log("proof-of-work over its time budget");
          return ch;
        });
      }).then((ch) => {
        st.p = null;
        st.ch = ch;
        st.input && (st.input.value = value(st));
        report("onReady", st, { token: ch.token, pow: ch.n != null });
        return ch;
      }, (e) => {
        st.p = null;
        log(e && e.message || e);
        report("onError", st, e);
        return null;
      });
    }
    return st.p;
  };
  let touch = (st, e) => {
    if (st.t == null) {
      st.t = Date.now();
      st.i = now();
    }
    if (!fresh(st)) challenge(st);
    return e;
  };
  let spend = (st) => {
    if (st.ch) st.spent = 1;
  };

  // --- events: delegated once on the document, so forms added later are covered too -------
  let on = (target, type, fn, capture) => {
    target.addEventListener(type, safe(fn), capture ? true : { passive: true });
  };
  let formOf = (e) => {
    let t = e.target;
    let f = t && (t.tagName == "FORM" ? t : t.form || (t.closest && t.closest("form")));
    return isProtected(f) ? state(f) : null;
  };
  let interaction = (e) => {
    if (e.isTrusted === false && (e.type == "keydown" || e.type == "pointerdown")) untrusted++;
    let st = formOf(e);
    if (!st) return;
    if (e.type == "keydown") st.k++;
    else if (e.type == "paste") st.v++;
    else if (e.type == "focusin") st.n++;
    touch(st, e);
  };
  ["focusin", "input", "keydown", "paste", "pointerdown"].forEach((type) => {
    on(doc, type, interaction, true);
  });
  on(doc, "pointermove", (e) => {
    if (e.isTrusted === false) untrusted++;
    if (pointer < CAP) pointer++;
  });
  on(doc, "pointerdown", () => { clicks++; });

  // Submit: with a challenge in hand, fill the field and let the submit go on untouched.
  // Without one (no interaction before submit, or a slow network) hold this submit, get one
  // within the time limits and submit again; on failure submit anyway (server: token_missing).
  // A submit uses its challenge up even if the page cancels it (an AJAX handler posts the form
  // itself; a resubmit must not look like a replay); the next one gets a fresh challenge.
  on(win, "submit", (e) => {
    let f = e.target;
    if (!isProtected(f)) return;
    let st = state(f);
    if (st.pass || fresh(st)) {
      st.input.value = value(st);
      spend(st);
      return;
    }
    touch(st);
    e.preventDefault();
    e.stopImmediatePropagation();
    let submitter = e.submitter;
    challenge(st).then(() => {
      st.input.value = value(st);
      st.pass = 1;
      try {
        if (f.requestSubmit) f.requestSubmit(submitter && submitter.form == f ? submitter : undefined);
        else f.submit();
      } catch (err) {
        log(err);
        try { f.submit(); } catch (again) { log(again); }
      } finally {
        st.pass = 0;
      }
    });
  }, true);
  // Every serialisation of the form (navigation, form.submit(), new FormData(form)) gets the
  // freshest report. Not spent here: pages build FormData to validate on every keystroke.
  on(doc, "formdata", (e) => {
    if (!isProtected(e.target) || !e.formData) return;
    let st = state(e.target);
    if (st.ch) e.formData.set(FIELD, value(st));
  }, true);

  let scan = safe(() => {
    let forms = doc.forms || [];
    for (let k = 0; k < forms.length; k++) if (isProtected(forms[k])) state(forms[k]);
  });
  if (doc.readyState == "loading") doc.addEventListener("DOMContentLoaded", scan);
  else scan();

  // --- the API: window.activelead(cmd, ...args) and window.activelead.cmd(...args) ------------
  let api = (cmd, ...args) => {
    try {
      let fn = api[cmd];
      if (typeof fn == "function" && cmd != "v") return fn.apply(api, args);
      log("unknown command", cmd);
    } catch (e) {
      log(e);
    }
  };
  api.v = 1;
  api.config = safe((o) => {
    for (let key in o || {}) opts[key] = o[key];
    return opts;
  });
  api.protect = api.attach = safe((f, o) => {
    if (!f || f.tagName != "FORM") return log("protect() needs a <form>", f);
    let st = state(f);
    st.o = o || st.o || {};
    explicit.set(f, st.o);
    return st;
  });
  // What a request adds: the field and the header, each carrying the value once.
  let hand = (st) => {
    let v = value(st), fields = {}, headers = {};
    if (v) {
      fields[FIELD] = v;
      headers[HEADER] = v;
      if (st.input) st.input.value = v;
      spend(st);
    }
    return { token: v, fields: fields, headers: headers };
  };
  let none = () => { return Promise.resolve({ token: "", fields: {}, headers: {} }); };
  // For AJAX: a promise of what to add to the request. Never rejects: on failure the values
  // are empty and the server sees token_missing, as with a blocked snippet.
  api.token = (f, o) => {
    let st;
    try {
      st = f && f.tagName == "FORM" ? (o && api.protect(f, o), state(f)) : page;
      if (!f || f.tagName != "FORM") st.o = f || o || st.o;
      touch(st);
    } catch (e) {
      log(e);
      return none();
    }
    return challenge(st).then(() => { return hand(st); });
  };
  // A 428 "step_up_required" answer from the proxy (its JSON, or its `stepUp` part): pay the
  // proof-of-work it asks for and resolve to what the retry adds, like token(). Never rejects.
  api.stepUp = (a, f) => {
    try {
      let s = a && a.stepUp || a, st = f && f.tagName == "FORM" ? state(f) : page;
      let d = s.pow && +s.pow.difficulty, ch = { token: s.token, exp: Date.now() + 6e4 };
      if (typeof ch.token != "string") throw new Error("not a step-up answer");
      return (d ? solve(win, ch.token + ":", d, option(st, "budget")) : Promise.resolve()).then((r) => {
        if (r) { ch.n = r.n; ch.s = r.s; } else if (d) log("proof-of-work over its time budget");
        st.ch = ch;
        st.spent = 0;
        return hand(st);
      });
    } catch (e) {
      log(e);
      return none();
    }
  };

  let queue = prev && prev.q;
  win.activelead = api;
  if (queue && queue.length) for (let k = 0; k < queue.length; k++) api.apply(null, queue[k]);
  return api;
}

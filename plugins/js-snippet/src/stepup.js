import { hints } from "./hints.js";
import { solve } from "./pow.js";

// The proxy's step-up page (proxy/interstitial.py): its JSON data names a signed step-up
// challenge and the fields of the post it held. Pay the proof-of-work, then post the same fields
// again, with the token, to the same URL (the form has no action). Resolves to true when the form
// went, false when it could not (the page then says what to do).
export function stepUp(win) {
  let doc = win.document, nav = win.navigator || {};
  let status = doc.getElementById("activelead-status");
  let say = (text) => { if (status) status.textContent = text; };
  let fail = (e) => {
    try { win.console.warn("Activelead:", e); } catch (_) { /* no console */ }
    say("Your browser could not finish the check. Please go back and send the form again.");
    return false;
  };
  let data, form;
  try {
    data = JSON.parse(doc.getElementById("activelead-stepup-data").textContent);
    form = doc.getElementById("activelead-stepup");
    if (!form || typeof data.token != "string" || !Array.isArray(data.fields)) throw new Error("no step-up data");
  } catch (e) {
    return Promise.resolve(fail(e));
  }
  return solve(win, data.token + ":", +data.difficulty, +data.budget || 60000).then((r) => {
    if (!r) return fail("proof-of-work over its time budget");
    // The first post's report (the snippet's own claim), with this page's markers added.
    let rep = {}, out = [], add = (name, value) => {
      let input = doc.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.appendChild(input);
    };
    for (let key in data.report || {}) if (/^[a-z]$/.test(key)) rep[key] = data.report[key] >>> 0;
    rep.w = rep.w || (nav.webdriver ? 1 : 0);
    rep.h = (rep.h | hints(win, 0)) >>> 0;
    rep.n = r.n;
    rep.s = r.s;
    for (let key in rep) out.push(key + "=" + rep[key]);
    data.fields.forEach((pair) => { add(String(pair[0]), String(pair[1])); });
    add(data.field || "activelead_token", data.token + "~" + out.join(","));
    say("Sending\u2026");
    // Not form.submit(): a field named "submit" would shadow it.
    win.HTMLFormElement.prototype.submit.call(form);
    return true;
  }).catch(fail);
}

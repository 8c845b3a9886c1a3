// Entry point of the step-up page's script (dist/stepup.<hash>.js), loaded only by the proxy's
// interstitial, never by the site's pages.
import { stepUp } from "./stepup.js";

try {
  stepUp(window);
} catch (e) {
  try { console.warn("Activelead:", e); } catch (_) { /* no console */ }
}

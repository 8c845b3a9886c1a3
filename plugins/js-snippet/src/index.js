// Entry point of the built snippet: <script src=".../activelead.js" data-site="pk_…" async>.
import { install } from "./core.js";

try {
  install(window, document.currentScript);
} catch (e) {
  try { console.warn("Activelead:", e); } catch (_) { /* no console */ }
}

// Automation markers, as the bit set the report's `h` carries (README, "Field names and the
// token"): shared by the snippet and the step-up page, which report them the same way.
export function hints(win, untrusted) {
  let h = 0, doc = win.document, nav = win.navigator || {};
  try {
    if (win.callPhantom || win._phantom) h |= 1;
    if (win.__nightmare) h |= 2;
    if (win.domAutomation || win.domAutomationController || win._selenium || win.callSelenium ||
      doc.__selenium_unwrapped || doc.__webdriver_evaluate || doc.__driver_evaluate ||
      Object.keys(win).concat(Object.keys(doc)).some((k) => { return /^\$?[cw]dc_/.test(k); })) h |= 4;
    if (nav.languages && !nav.languages.length) h |= 8;
    if (/HeadlessChrome/.test(nav.userAgent)) h |= 16;
    if (untrusted) h |= 32;
  } catch (e) { /* a hostile getter: no hint */ }
  return h;
}

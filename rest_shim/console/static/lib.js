// The front-end stack in one place: Preact with its hooks, and htm for markup in tagged
// templates (no build step). Preact escapes every value it renders as text or attribute,
// and the console never sets HTML from a string.
import { h, render } from "./vendor/preact.mjs";
import { useCallback, useEffect, useMemo, useRef, useState } from "./vendor/hooks.mjs";
import htm from "./vendor/htm.mjs";

export const html = htm.bind(h);
export { render, useCallback, useEffect, useMemo, useRef, useState };

/** Call `load(signal)` now and every `intervalMs` while the component is shown. */
export function usePoll(load, intervalMs, deps) {
  useEffect(() => {
    const abort = new AbortController();
    let timer = 0;
    async function tick() {
      let delayMs = intervalMs;
      // A hidden tab asks nothing; it catches up when shown again.
      if (!document.hidden) {
        try {
          await load(abort.signal);
        } catch (error) {
          // A rate-limited poll waits as long as the server says (Retry-After).
          delayMs = Math.max(delayMs, (error.retryAfterS || 0) * 1000);
        }
      }
      if (!abort.signal.aborted) timer = setTimeout(tick, delayMs);
    }
    tick();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, deps);
}

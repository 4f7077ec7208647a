// launcher dashboard: keep the page's live parts current without reloading it. <main data-api=URL
// data-refresh=SECONDS>: every SECONDS, GET URL (JSON); its "html" object maps element ids to fragments
// the server rendered with the page's own templates (escaped there); each element whose fragment
// changed is replaced. A failed poll says so in #updated and the next one tries again.
"use strict";
(() => {
  const main = document.querySelector("main[data-api]");
  if (!main || !main.dataset.api) return;
  const every = 1000 * Math.max(0.5, Number(main.dataset.refresh) || 2);
  const stamp = document.getElementById("updated");
  const last = new Map();

  function said(text, stale) {
    if (!stamp) return;
    stamp.textContent = text;
    stamp.classList.toggle("stale", stale);
  }

  async function poll() {
    try {
      const answer = await fetch(main.dataset.api, {headers: {Accept: "application/json"}, cache: "no-store"});
      if (!answer.ok) throw new Error(`${answer.status} ${answer.statusText}`);
      const data = await answer.json();
      for (const [id, html] of Object.entries(data.html || {})) {
        const el = document.getElementById(id);
        if (el && last.get(id) !== html) {
          el.innerHTML = html;
          last.set(id, html);
        }
      }
      said(`updated ${new Date().toLocaleTimeString()}`, false);
    } catch (err) {
      said(`not updated (${err.message}); retrying`, true);
    } finally {
      setTimeout(poll, every);
    }
  }

  setTimeout(poll, every);
})();

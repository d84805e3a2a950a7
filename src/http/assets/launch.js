// The launch page of ordobridge: follows the prescription imported from Scan & Go until the
// EHR acknowledges it. It reads nothing but the data-* attributes of #launch (written by the
// server, escaped) and the JSON of its own status route; messages count only when they come
// from the configured Posos origin and from the Scan & Go window this page opened.
(() => {
  'use strict';
  const root = document.getElementById('launch');
  if (!root) {
    return;
  }
  const d = root.dataset;
  const headline = document.getElementById('headline');
  const scanStatus = document.getElementById('scan-status');
  const steps = document.getElementById('steps');
  const messages = document.getElementById('messages');
  const frame = document.getElementById('scan');
  const started = Date.now();
  let scanWindow = frame ? frame.contentWindow : null;
  let bundle = null;
  let scanDone = null;
  let scanDoneAt = 0;
  let finished = false;
  let timer = null;

  const openPopup = () => {
    scanWindow = window.open(d.scan, 'posos-scan-go') ?? scanWindow;
  };
  const open = document.getElementById('open');
  if (open) {
    open.addEventListener('click', openPopup);
    // Without a click the browser may block it: the button stays for that case.
    openPopup();
  }

  const scanResult = (status) => {
    if (scanDone === status) {
      return;
    }
    scanDone = status;
    scanDoneAt = Date.now();
    scanStatus.textContent = status === 'success' ? d.msgImported : d.msgImportError;
    if (status === 'success') {
      schedule(0);
    }
  };

  // Messages from elsewhere are counted (for whoever debugs the page), never read.
  let ignored = 0;
  const ignore = () => {
    ignored += 1;
    root.dataset.ignored = String(ignored);
  };
  window.addEventListener('message', (event) => {
    if (event.origin !== d.origin || (scanWindow && event.source !== scanWindow)) {
      ignore();
      return;
    }
    const data = event.data;
    if (!data || typeof data !== 'object') {
      return;
    }
    const prescription = data.prescription;
    if (prescription && typeof prescription === 'object' && typeof prescription.bundleId === 'string') {
      bundle = prescription.bundleId;
    }
    if (data.status === 'success' || data.status === 'error') {
      scanResult(data.status);
    }
  });

  // The `#success` / `#error` hash of Scan & Go: readable only when it is served from this
  // page's origin (the built-in simulator); otherwise its message is what counts.
  const watchHash = () => {
    try {
      const hash = scanWindow ? scanWindow.location.hash : '';
      if (hash === '#success') {
        scanResult('success');
      } else if (hash === '#error') {
        scanResult('error');
      }
    } catch {
      // another origin: the browser hides its location
    }
  };

  const item = (text, step) => {
    const li = document.createElement('li');
    li.textContent = text;
    if (step) {
      li.dataset.step = step;
    }
    return li;
  };
  const when = (at) => (at ? ` — ${new Date(at).toLocaleTimeString(d.lang)}` : '');

  const render = (status) => {
    root.dataset.state = status.state;
    headline.textContent = status.headline;
    steps.replaceChildren(...status.steps.map((s) => item(`${s.label}${when(s.at)}`, s.step)));
    messages.replaceChildren(...status.messages.map((m) => item(`${m.destination} : ${m.label}${when(m.at)}`)));
    if (status.state === 'waiting' && scanDone === 'success' && Date.now() - scanDoneAt > 30000) {
      headline.textContent = d.msgLate;
    }
  };

  const poll = async () => {
    watchHash();
    let url = `${d.status}?lang=${encodeURIComponent(d.lang)}`;
    if (bundle) {
      url += `&bundle=${encodeURIComponent(bundle)}`;
    }
    try {
      const answer = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
      if (answer.status === 404) {
        headline.textContent = d.msgUnknown;
        finished = true;
        return;
      }
      if (!answer.ok) {
        scanStatus.textContent = d.msgUnreachable;
        return;
      }
      const status = await answer.json();
      render(status);
      finished = status.final === true;
    } catch {
      scanStatus.textContent = d.msgUnreachable;
    }
  };

  // Every second for two minutes, then every five (a held prescription may wait for hours).
  function schedule(delay) {
    if (finished) {
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await poll();
      schedule(Date.now() - started > 120000 ? 5000 : 1000);
    }, delay);
  }
  schedule(0);
})();

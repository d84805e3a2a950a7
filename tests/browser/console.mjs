// The web console in headless Chromium (tests/browser_console.rs runs it). As an operator:
// log in, see the dashboard count a message that arrives meanwhile (sent here over MLLP) with
// no page reload, search it by MSH-10, open it (tree, lineage), resend it to the EHR and see
// the delivery in its lineage, see a POST without the CSRF token refused, log out. As a
// viewer: no resend button, and a POST with the viewer's own token refused. Screenshots go to
// SCREENSHOT_DIR. Prints one JSON summary line on stdout; diagnostics go to stderr.
//
// Environment: see chromium.mjs, plus BASE_URL (http://127.0.0.1:PORT), MLLP_ADDR (host:port),
// MESSAGE_FILE, OPERATOR, OPERATOR_PASSWORD, VIEWER, VIEWER_PASSWORD, SCREENSHOT_DIR,
// STEP_TIMEOUT_MS, TOTAL_TIMEOUT_MS.
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { env, launch } from './chromium.mjs';

const stepTimeout = Number(process.env.STEP_TIMEOUT_MS ?? 10000);
const totalTimeout = Number(process.env.TOTAL_TIMEOUT_MS ?? 60000);
const base = env('BASE_URL');
const shots = env('SCREENSHOT_DIR');

const watchdog = setTimeout(() => {
  console.error(`console.mjs: gave up after ${totalTimeout} ms`);
  process.exit(3);
}, totalTimeout);

/// Sends one HL7 message over MLLP and resolves with the ACK text.
const sendMllp = (address, bytes) =>
  new Promise((resolve, reject) => {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
    const socket = net.connect({ host, port }, () => {
      socket.write(Buffer.concat([Buffer.from([0x0b]), bytes, Buffer.from([0x1c, 0x0d])]));
    });
    let answer = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      answer = Buffer.concat([answer, chunk]);
      if (answer.includes(0x1c)) {
        socket.end();
        resolve(answer.toString('latin1'));
      }
    });
    socket.on('error', reject);
    socket.setTimeout(stepTimeout, () => reject(new Error('no ACK in time')));
  });

const login = async (page, user, password) => {
  await page.goto(`${base}/console/login?lang=en`);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(`${base}/console/`);
};

/// POSTs a form from the page (same origin, its cookies) and returns the status.
const postFrom = (page, url, fields) =>
  page.evaluate(
    async ({ url, fields }) => {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(fields).toString(),
        redirect: 'manual',
      });
      return response.status;
    },
    { url, fields },
  );

let context;
let exitCode = 0;
const summary = {};
try {
  fs.mkdirSync(shots, { recursive: true });
  context = await launch(stepTimeout);
  context.on('console', (message) => console.error(`page console: ${message.text()}`));
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('dialog', (dialog) => dialog.accept());

  // Log in as the operator: the dashboard, before any message.
  await login(page, env('OPERATOR'), env('OPERATOR_PASSWORD'));
  summary.dashboard_heading = await page.locator('h1').innerText();
  summary.journaled_before = await page.locator('#journaled').innerText();
  await page.evaluate(() => {
    window.__same_page = true;
  });

  // A message arrives: the dashboard counts it, pushed by the server (no reload).
  summary.ack = await sendMllp(env('MLLP_ADDR'), fs.readFileSync(env('MESSAGE_FILE')));
  await page.waitForFunction(() => document.querySelector('#journaled')?.textContent === '1');
  summary.journaled_after = await page.locator('#journaled').innerText();
  summary.same_page = await page.evaluate(() => window.__same_page === true);
  summary.adt_in_received = await page.locator('tr[data-channel="adt-in"] td.received').innerText();
  await page.screenshot({ path: path.join(shots, 'dashboard.png'), fullPage: true });

  // Search by MSH-10 and open the message.
  await page.getByRole('link', { name: 'Messages' }).click();
  await page.getByLabel('MSH-10').fill('SYN0002');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL(/control_id=SYN0002/);
  summary.results = await page.locator('#results tbody tr').count();
  await page.locator('#results tbody tr a').first().click();
  await page.waitForURL(/\/console\/messages\/\d+$/);
  summary.message_url = page.url();
  summary.tree_has_pid = await page.locator('#tree').innerText();
  summary.lineage_before = await page.locator('#no-lineage').innerText();
  await page.screenshot({ path: path.join(shots, 'message.png'), fullPage: true });

  // Without the CSRF token the resend is refused.
  summary.post_without_csrf = await postFrom(page, `${summary.message_url}/resend`, {
    destination: 'ehr',
    reason: 'forged',
  });

  // Resend to the EHR, with a reason; the lineage then shows the delivery and the ACK.
  await page.getByLabel('To', { exact: true }).selectOption('ehr');
  await page.getByLabel('Reason (audited)').fill('EHR lost it');
  await page.getByRole('button', { name: 'Resend' }).click();
  await page.waitForURL(/done=resend/);
  summary.notice = await page.locator('#notice').innerText();
  for (let i = 0; i < 100; i += 1) {
    if ((await page.locator('tr.lineage-row[data-status="delivered"]').count()) > 0) break;
    await page.waitForTimeout(100);
    await page.reload();
  }
  summary.lineage_status = await page.locator('tr.lineage-row td.status').first().innerText();
  summary.lineage_ack = await page.locator('tr.lineage-row code.ack').first().innerText();
  await page.screenshot({ path: path.join(shots, 'resent.png'), fullPage: true });

  // Log out.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/console\/login\?out=1/);
  summary.logged_out = await page.locator('#notice').innerText();
  await page.goto(`${base}/console/`);
  summary.after_logout_url = page.url();

  // The viewer: no resend button, and a POST with its own token is refused.
  await login(page, env('VIEWER'), env('VIEWER_PASSWORD'));
  await page.goto(summary.message_url);
  summary.viewer_resend_buttons = await page.getByRole('button', { name: 'Resend' }).count();
  summary.viewer_note = await page.locator('#phi-hidden').innerText();
  const viewerCsrf = await page.locator('input[name="csrf"]').first().inputValue();
  summary.viewer_post = await postFrom(page, `${summary.message_url}/resend`, {
    csrf: viewerCsrf,
    destination: 'ehr',
    reason: 'viewer tries',
  });
  await page.screenshot({ path: path.join(shots, 'viewer.png'), fullPage: true });

  // French.
  await page.goto(`${base}/console/?lang=fr`);
  summary.french_heading = await page.locator('h1').innerText();

  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (error) {
  console.error(`console.mjs: ${error?.stack ?? error}`);
  console.error(`summary so far: ${JSON.stringify(summary)}`);
  exitCode = 1;
} finally {
  await context?.close().catch((e) => console.error(`console.mjs: close: ${e}`));
  clearTimeout(watchdog);
}
process.exit(exitCode);

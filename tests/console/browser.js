// The browser half of tests/console_browser.rs: real chromium walks the support console the way
// support and an admin do, after signing in at the real provider. Every observation goes into
// one JSON object printed as "RESULT {...}"; the Rust test asserts them. A step that throws is
// recorded under `errors` and the walk goes on, so one missing page does not hide the others.
// Env: GATEWAY, IDP (see ../signin/lib.js), LATE (the late order's id), SHOP_TRACE (its Shop
// trace id), EMAIL (personal data in that trace), REASON (the admin's unmask
// reason), SHOTS (the screenshot directory), SECRETS (configuration secrets, one a line, that
// the admin page must not show), EVENTS (the gateway's order-event URL).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { launch } = require('../browser/lib/browser');
const { GATEWAY, IDP, fillLogin, sessionCookie } = require('../signin/lib');

const { LATE, SHOP_TRACE, EMAIL, REASON, SHOTS } = process.env;
const SECRETS = (process.env.SECRETS || '').split('\n').filter(Boolean);
const EVENTS = process.env.EVENTS;
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js', { paths: [path.join(__dirname, '../browser')] }), 'utf8');
const WIDE = { width: 1280, height: 900 };

const result = { errors: {}, xss: {}, axe: {}, csp: {}, render_ms: {}, failed_responses: [], dialogs: [], confirms: [], console_errors: [], injected_elements: [] };
let expectConfirm = false;

function log(...args) {
  console.error('[console-browser]', ...args);
}

/** Runs one step of the walk; a failure is recorded and the walk goes on. */
async function step(name, fn) {
  log(name);
  try {
    await fn();
  } catch (e) {
    log(`${name} failed:`, e);
    result.errors[name] = String((e && e.stack) || e).split('\n').slice(0, 3).join(' | ');
  }
}

/** A context at 1280×900 whose pages report dialogs, script errors and CSP violations. */
async function newContext() {
  // UTC: the screenshots read the same wherever the test runs.
  const context = await browser.newContext({ viewport: WIDE, timezoneId: 'UTC', locale: 'en-GB' });
  // Added through the DevTools protocol, not the page: the page's CSP does not apply to it.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile || ''}:${e.lineNumber || ''}`);
    });
  });
  context.on('page', watch);
  return context;
}

/** Reports of one page: only what happens on the gateway's pages counts (not the provider's). */
function watch(page) {
  const ours = () => page.url().startsWith(GATEWAY);
  page.on('console', (m) => {
    if (m.type() !== 'error' || !ours()) return;
    const source = m.location().url || '';
    // A refusal page's own status (403 for support on /admin, nora's sign-in) is what the test
    // asks for; every other failed load, script error or CSP violation counts.
    if (/^Failed to load resource: the server responded with a status of/.test(m.text()) && source === page.url()) return;
    result.console_errors.push({ url: page.url(), source, text: m.text() });
  });
  page.on('response', (r) => {
    if (r.url().startsWith(GATEWAY) && r.status() >= 400) result.failed_responses.push({ url: r.url().slice(GATEWAY.length), status: r.status() });
  });
  page.on('pageerror', (e) => {
    if (ours()) result.console_errors.push({ url: page.url(), text: `uncaught: ${e.message}` });
  });
  page.on('dialog', async (d) => {
    if (expectConfirm && d.type() === 'confirm') {
      result.confirms.push(d.message());
      await d.accept();
    } else {
      result.dialogs.push({ url: page.url(), type: d.type(), message: d.message() });
      await d.dismiss();
    }
  });
}

/** Everything a page must be wherever it is: hostile markup inert, axe clean, a screenshot.
 *  `window.__xss` alone proves little (the CSP would block an injected script or handler
 *  anyway): the DOM is searched for injected elements and handlers too, and a blocked one
 *  shows up as a CSP violation in `console_errors`. */
async function inspect(page, name, { axe = true, shot = name } = {}) {
  await page.waitForLoadState('load');
  result.xss[name] = await page.evaluate(() => typeof window.__xss);
  const injected = await page.evaluate(() => {
    const found = [];
    document.querySelectorAll('img[src="x"], img[onerror], [onerror], [onclick], [onload]').forEach((el) => found.push(el.outerHTML.slice(0, 120)));
    document.querySelectorAll('script').forEach((el) => {
      const src = el.getAttribute('src') || '';
      if (!/\/static\/console\.js$/.test(src)) found.push(el.outerHTML.slice(0, 120));
    });
    return found;
  });
  for (const html of injected) result.injected_elements.push({ page: name, html });
  if (shot) {
    await page.screenshot({ path: path.join(SHOTS, `${shot}.png`), fullPage: true });
    fs.writeFileSync(path.join(SHOTS, `${shot}.html`), await page.content());
  }
  if (axe) result.axe[name] = await runAxe(page);
}

/** axe-core's serious and critical violations on the page (its source evaluated through the
 *  DevTools protocol: an inline <script> would be refused by the page's CSP, as it should). */
async function runAxe(page) {
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }));
  });
}

/** Sets the filter controls `fields` ({name: value}) of the form holding them and submits it
 *  with its own button, as a person does; the rows' `data-order-id`s or `data-rule`s after. */
async function filter(page, fields, rows) {
  const names = Object.keys(fields);
  for (const [name, value] of Object.entries(fields)) {
    const control = page.locator(`[name="${name}"]`).first();
    if ((await control.evaluate((el) => el.tagName)) === 'SELECT') await control.selectOption(value);
    else await control.fill(value);
  }
  const submit = page.locator(`form:has([name="${names[0]}"]) [type="submit"]`).first();
  await Promise.all([page.waitForNavigation(), submit.click()]);
  result.xss[`filter ${page.url()}`] = await page.evaluate(() => typeof window.__xss);
  return page.$$eval(rows, (trs) => trs.map((r) => ({ id: r.dataset.orderId || null, rule: r.dataset.rule || null, state: r.dataset.state || null })));
}

/** Records a console page's Content-Security-Policy and server render time (Server-Timing). */
function headers(name, response) {
  const h = response ? response.headers() : {};
  result.csp[name] = h['content-security-policy'] || null;
  const timing = /render;dur=([0-9.]+)/.exec(h['server-timing'] || '');
  result.render_ms[name] = timing ? Number(timing[1]) : null;
}

/** Is the form control `selector` labelled (a <label>, aria-label or aria-labelledby)? */
async function labelled(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return false;
    const text = (s) => (s || '').trim().length > 0;
    return (el.labels && [...el.labels].some((l) => text(l.textContent))) || text(el.getAttribute('aria-label')) || !!el.getAttribute('aria-labelledby');
  }, selector);
}

const text = (s) => (s || '').replace(/\s+/g, ' ').trim();

let browser;

async function main() {
  browser = await launch();
  let support;
  try {
    // 1. The door: `/` without a session goes to the provider; support signs in and is back at `/`.
    await step('door', async () => {
      const context = await newContext();
      const page = await context.newPage();
      await page.goto(`${GATEWAY}/`);
      result.door_first_url = page.url();
      result.door_redirected_to_idp = page.url().startsWith(`${IDP}/interaction/`);
      const callback = await fillLogin(page, 'sam');
      result.support_callback_status = callback.status();
      result.support_landed_on = page.url();
      support = { context, page };
    });
    if (!support) throw new Error('support could not sign in; nothing else can be checked');
    const page = support.page;

    // 2. Orders: labelled search and filters, the rows, the search.
    await step('orders', async () => {
      headers('orders', await page.goto(`${GATEWAY}/`));
      result.orders_q_labelled = await page.evaluate(() => {
        const q = document.querySelector('input[name="q"]');
        return !!q && !!q.labels && [...q.labels].some((l) => l.textContent.includes('Order id'));
      });
      result.orders_filters = {};
      for (const name of ['status', 'service', 'since', 'until', 'alert']) {
        result.orders_filters[name] = await labelled(page, `[name="${name}"]`);
      }
      result.orders_rows = await page.$$eval('#orders tr[data-order-id]', (rows) => rows.map((r) => r.getAttribute('data-order-id')));
      result.orders_late_row = await page.$$eval(`#orders tr[data-order-id]`, (rows, id) => {
        const row = rows.find((r) => r.getAttribute('data-order-id') === id);
        return row ? row.textContent.replace(/\s+/g, ' ').trim() : null;
      }, LATE);
      await inspect(page, 'orders');
    });
    await step('orders_filters', async () => {
      await page.goto(`${GATEWAY}/`);
      result.filter_alert_firing = (await filter(page, { alert: 'firing' }, '#orders tr[data-order-id]')).map((r) => r.id);
      await page.goto(`${GATEWAY}/`);
      result.filter_status_courier = (await filter(page, { status: 'handed_to_courier' }, '#orders tr[data-order-id]')).map((r) => r.id);
    });
    await step('search', async () => {
      await page.goto(`${GATEWAY}/`);
      await page.fill('input[name="q"]', LATE);
      await Promise.all([page.waitForNavigation(), page.press('input[name="q"]', 'Enter')]);
      // An exact id may go straight to the order, or list it alone.
      if (!new URL(page.url()).pathname.startsWith('/orders/')) {
        const link = page.locator(`#orders tr[data-order-id="${LATE}"] a`).first();
        await Promise.all([page.waitForNavigation(), link.click()]);
      }
      result.search_landed_on = page.url().split('?')[0];
      await page.goto(`${GATEWAY}/?q=${encodeURIComponent(LATE.slice(0, -1))}`);
      result.prefix_rows = await page.$$eval('#orders tr[data-order-id]', (rows) => rows.map((r) => r.getAttribute('data-order-id')));
      result.xss.search = await page.evaluate(() => typeof window.__xss);
    });

    // 3. The late order's page.
    await step('order', async () => {
      headers('order', await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`));
      const o = await page.evaluate(() => {
        const t = (el) => (el ? el.textContent.replace(/\s+/g, ' ').trim() : null);
        const facts = {};
        document.querySelectorAll('#facts dt').forEach((dt) => {
          let dd = dt.nextElementSibling;
          while (dd && dd.tagName !== 'DD') dd = dd.nextElementSibling;
          facts[t(dt)] = t(dd);
        });
        const svg = document.querySelector('svg#swimlane');
        const box = svg ? svg.parentElement : null;
        return {
          h1: t(document.querySelector('h1')),
          facts,
          alerts: [...document.querySelectorAll('#alerts .alert[data-state][data-rule]')].map((a) => ({ state: a.dataset.state, rule: a.dataset.rule, text: t(a) })),
          lanes: [...document.querySelectorAll('#swimlane g.lane[data-service]')].map((g) => ({ service: g.dataset.service, text: t(g) })),
          steps: [...document.querySelectorAll('#swimlane g.step[data-stage][data-service]')].map((g) => {
            const a = g.querySelector('a');
            return { stage: g.dataset.stage, service: g.dataset.service, href: a ? a.getAttribute('href') || a.getAttribute('xlink:href') : null };
          }),
          gaps: [...document.querySelectorAll('#swimlane text.gap')].map(t),
          hops: document.querySelectorAll('#swimlane line.hop').length,
          // role=img when it is a picture; role=group when it holds links (img would hide them).
          swimlane_labelled: !!svg && ['img', 'group'].includes(svg.getAttribute('role')) && (!!svg.getAttribute('aria-label') || !!svg.querySelector('title')),
          steps_rows: document.querySelectorAll('#steps tbody tr').length,
          trace_links: [...document.querySelectorAll('#steps a')].filter((a) => /\/traces\//.test(a.getAttribute('href') || '')).length,
          jaeger_links: [...document.querySelectorAll('#steps a')].filter((a) => /jaeger/i.test(a.textContent)).map((a) => a.getAttribute('href')),
          transitions: [...document.querySelectorAll('#transitions tr[data-from][data-to]')].map((r) => ({
            from: r.dataset.from, to: r.dataset.to, breach: r.classList.contains('breach'), text: t(r),
          })),
          files: t(document.querySelector('#files')),
          file_links: [...document.querySelectorAll('#files a')].map((a) => a.getAttribute('href')),
          live: !!document.querySelector('#live[data-live]'),
          swimlane_box: box ? { overflowX: getComputedStyle(box).overflowX } : null,
        };
      });
      result.order_h1 = o.h1;
      result.order_facts = o.facts;
      result.order_alerts = o.alerts;
      result.order_lanes = o.lanes;
      result.order_steps = o.steps;
      result.order_gaps = o.gaps;
      result.order_hops = o.hops;
      result.order_swimlane_labelled = o.swimlane_labelled;
      result.order_steps_table_rows = o.steps_rows;
      result.order_trace_links = o.trace_links;
      result.order_jaeger_links = o.jaeger_links;
      result.order_transitions = o.transitions;
      result.order_files = o.files;
      result.order_file_links = o.file_links;
      result.order_live = o.live;
      result.order_swimlane_box = o.swimlane_box;
      await inspect(page, 'order');
    });
    await step('keyboard', async () => {
      // From the top of the order page: the skip link first, then Tab reaches a step of the
      // swimlane, and Enter opens its trace.
      await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      await page.keyboard.press('Tab');
      result.keyboard_first = await page.evaluate(() => (document.activeElement ? document.activeElement.textContent.trim() : null));
      let reached = false;
      for (let i = 0; i < 80 && !reached; i++) {
        await page.keyboard.press('Tab');
        reached = await page.evaluate(() => !!(document.activeElement && document.activeElement.closest && document.activeElement.closest('#swimlane g.step')));
      }
      result.keyboard_reaches_step = reached;
      if (reached) {
        await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
        result.keyboard_enter_opened = page.url();
      }
    });
    await step('order_1024', async () => {
      await page.setViewportSize({ width: 1024, height: 900 });
      await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      result.order_overflow_1024 = await page.evaluate(() => {
        const root = document.documentElement;
        const svg = document.querySelector('svg#swimlane');
        // The swimlane's nearest ancestor that scrolls sideways, inside the viewport.
        let box = svg ? svg.parentElement : null;
        while (box && box !== document.body && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
        const inBox = !!box && box !== document.body && box.getBoundingClientRect().right <= root.clientWidth + 1;
        // What sticks out, for the page's author.
        const wide = [...document.querySelectorAll('body *')]
          .filter((el) => el.getBoundingClientRect().right > root.clientWidth + 1 && !(box && box.contains(el) && box !== el))
          .slice(0, 8)
          .map((el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.trim().split(/\s+/).join('.')}` : ''} right=${Math.round(el.getBoundingClientRect().right)}`);
        return {
          wide,
          body_overflows: root.scrollWidth > root.clientWidth || document.body.scrollWidth > root.clientWidth,
          scroll_width: root.scrollWidth,
          client_width: root.clientWidth,
          swimlane_in_box: inBox,
        };
      });
      await page.screenshot({ path: path.join(SHOTS, 'order-1024.png'), fullPage: true });
      await page.setViewportSize(WIDE);
    });

    // 4. A trace from a step: the waterfall, masked personal data, hostile text as text.
    await step('trace', async () => {
      await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      const link = page.locator('#swimlane g.step[data-stage="created"] a').first();
      const [response] = await Promise.all([page.waitForNavigation(), link.click()]);
      headers('trace', response);
      result.trace_url = page.url();
      const t = await page.evaluate(({ email, xss }) => {
        const html = document.documentElement.outerHTML;
        const rows = [...document.querySelectorAll('#waterfall tr.span[data-span-id]')];
        return {
          rows: rows.length,
          bars: rows.filter((r) => r.querySelector('svg rect, svg line')).length,
          panels: rows.filter((r) => r.querySelector('details.attrs')).length,
          has_email: html.includes(email) || document.body.innerText.includes(email),
          has_pseudonym: document.body.textContent.includes('pseud:'),
          xss_name_as_text: rows.some((r) => r.textContent.includes(xss)),
          unmask_form: !!document.querySelector('form#unmask'),
          // Geometry as drawn: where each span's name starts (indentation by depth) and how wide
          // its bar is (the narrowest drawn rect of its row: durations to scale).
          geometry: Object.fromEntries(['POST /orders', 'INSERT shop.orders'].map((name) => {
            for (const row of rows) {
              const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
              while (walker.nextNode()) {
                if (walker.currentNode.textContent.trim() !== name) continue;
                const range = document.createRange();
                range.selectNodeContents(walker.currentNode);
                const rects = [...row.querySelectorAll('svg rect')].map((x) => x.getBoundingClientRect().width).filter((w) => w > 0);
                return [name, { left: range.getBoundingClientRect().left, bar: rects.length ? Math.min(...rects) : null }];
              }
            }
            return [name, null];
          })),
        };
      }, { email: EMAIL, xss: '<script>window.__xss=1</script>' });
      result.trace_rows = t.rows;
      result.trace_bars = t.bars;
      result.trace_attr_panels = t.panels;
      result.trace_has_email = t.has_email;
      result.trace_has_pseudonym = t.has_pseudonym;
      result.trace_xss_name_as_text = t.xss_name_as_text;
      result.trace_support_unmask_form = t.unmask_form;
      result.trace_geometry = t.geometry;
      // Open every attribute panel: the values are in view, still inert.
      await page.$$eval('details.attrs', (all) => all.forEach((d) => { d.open = true; }));
      await inspect(page, 'trace');
    });
    await step('linked_trace', async () => {
      // CRM's trace, opened from its consume step, links to Shop's (the message's publish).
      await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      const link = page.locator('#swimlane g.step[data-stage="bus_consume"] a').first();
      await Promise.all([page.waitForNavigation(), link.click()]);
      result.crm_trace_url = page.url();
      result.trace_linked = await page.evaluate((shop) => [...document.querySelectorAll('a')].some((a) => (a.getAttribute('href') || '').includes(`/traces/${shop}`)), SHOP_TRACE);
      await inspect(page, 'crm_trace', { axe: false, shot: 'trace-crm' });
      // MES's order event (its attributes carry markup too).
      await page.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      const mes = page.locator('#swimlane g.step[data-service="mes-api"] a').first();
      await Promise.all([page.waitForNavigation(), mes.click()]);
      result.mes_trace_url = page.url();
      await page.$$eval('details.attrs', (all) => all.forEach((d) => { d.open = true; }));
      result.mes_trace_markup_as_text = await page.evaluate(() => document.body.textContent.includes('"><img src=x onerror="window.__xss=1">'));
      await inspect(page, 'mes_trace', { axe: false, shot: 'trace-mes' });
    });

    // 5. Alerts.
    await step('alerts', async () => {
      headers('alerts', await page.goto(`${GATEWAY}/alerts`));
      result.alerts_rows = await page.$$eval('#alerts-table tr[data-state][data-rule]', (rows) => rows.map((r) => {
        const a = [...r.querySelectorAll('a')].find((x) => /\/orders\//.test(x.getAttribute('href') || ''));
        return { state: r.dataset.state, rule: r.dataset.rule, order_link: a ? a.getAttribute('href') : null };
      }));
      result.alerts_filters = {};
      for (const name of ['state', 'rule', 'severity']) result.alerts_filters[name] = await labelled(page, `[name="${name}"]`);
      await inspect(page, 'alerts');
      result.alerts_filter_firing = await filter(page, { state: 'firing' }, '#alerts-table tr[data-state][data-rule]');
    });

    // 6. Support may not open the admin page: the console's 403 page.
    await step('forbidden', async () => {
      const response = await page.goto(`${GATEWAY}/admin`);
      headers('forbidden', response);
      result.support_admin_status = response.status();
      result.support_admin_text = text(await page.textContent('body'));
      await inspect(page, 'forbidden', { shot: '403' });
    });
    await support.context.close();

    // 7. Nora has no role: refused at sign-in, no session.
    await step('norole', async () => {
      const context = await newContext();
      const p = await context.newPage();
      await p.goto(`${GATEWAY}/`);
      const callback = await fillLogin(p, 'nora');
      result.norole_callback_status = callback.status();
      result.norole_text = text(await p.textContent('body'));
      result.norole_cookie = !!sessionCookie(await context.cookies());
      await inspect(p, 'norole', { shot: '403-signin' });
      await context.close();
    });

    // 8. The admin unmasks the trace with a reason, then finds the record on /admin.
    await step('admin_unmask', async () => {
      // A deep link without a session: to the provider and back to the trace.
      adminContext = await newContext();
      const p = await adminContext.newPage();
      await p.goto(`${GATEWAY}/traces/${SHOP_TRACE}`);
      await fillLogin(p, 'ada');
      result.admin_landed_on = p.url();
      adminPage = p;
      result.admin_unmask_form = await p.evaluate(() => {
        const form = document.querySelector('form#unmask');
        if (!form) return null;
        const reason = form.querySelector('[name="reason"]');
        const csrf = form.querySelector('input[type="hidden"][name="csrf"]');
        return {
          reason_labelled: !!reason && ((reason.labels && reason.labels.length > 0) || !!reason.getAttribute('aria-label')),
          csrf: !!csrf && (csrf.value || '').length > 0,
        };
      });
      result.admin_masked_before = await p.evaluate((email) => !document.documentElement.outerHTML.includes(email), EMAIL);
      await p.fill('form#unmask [name="reason"]', REASON);
      expectConfirm = true;
      const [response] = await Promise.all([
        p.waitForResponse((r) => r.request().method() === 'POST' && r.url().includes('/unmask'), { timeout: 15_000 }),
        p.locator('form#unmask [type="submit"]').first().click(),
      ]);
      await p.waitForLoadState('load');
      expectConfirm = false;
      result.admin_unmask_status = response.status();
      result.admin_unmasked_email = await p.evaluate((email) => document.body.textContent.includes(email), EMAIL);
      await p.$$eval('details.attrs', (all) => all.forEach((d) => { d.open = true; }));
      await inspect(p, 'trace_unmasked', { shot: 'trace-unmasked' });
    });
    await step('admin', async () => {
      if (!adminPage) throw new Error('the admin did not sign in');
      const p = adminPage;
      headers('admin', await p.goto(`${GATEWAY}/admin`));
      result.admin_status = 200;
      result.admin_audit_row = await p.$$eval('#audit tr[data-action]', (rows, reason) => {
        const row = rows.find((r) => /unmask/.test(r.dataset.action) && r.textContent.includes(reason));
        return row ? row.textContent.replace(/\s+/g, ' ').trim() : null;
      }, REASON);
      result.admin_config_shown = await p.evaluate(() => !!document.querySelector('pre#config') && document.querySelector('pre#config').textContent.length > 20);
      result.admin_config_secrets = await p.evaluate((secrets) => secrets.filter((x) => document.body.textContent.includes(x)), SECRETS);
      result.admin_filters = {};
      for (const name of ['actor', 'action', 'since', 'until']) result.admin_filters[name] = await labelled(p, `[name="${name}"]`);
      await inspect(p, 'admin');
      // Reload from the page's own form (hidden CSRF token), the result shown on the page.
      result.admin_reload_csrf = await p.evaluate(() => {
        const csrf = document.querySelector('form#reload input[type="hidden"][name="csrf"]');
        return !!csrf && csrf.value.length > 0;
      });
      expectConfirm = true;
      await Promise.all([p.waitForNavigation(), p.locator('form#reload [type="submit"]').first().click()]);
      expectConfirm = false;
      result.admin_reload_result = text(await p.textContent('#reload-result'));
      result.admin_reload_outcome = await p.evaluate(() => {
        const el = document.querySelector('#reload-result');
        const marked = el && (el.closest('[data-outcome]') || el.querySelector('[data-outcome]'));
        return marked ? marked.getAttribute('data-outcome') : null;
      });
      result.xss.admin_reload = await p.evaluate(() => typeof window.__xss);
    });
    // 9. The in-flight order's page updates itself: MES reports the order manufactured while the
    //    page is open; the facts and the alert change without a reload.
    await step('live', async () => {
      if (!adminPage) throw new Error('the admin did not sign in');
      const p = adminPage;
      await p.goto(`${GATEWAY}/orders/${encodeURIComponent(LATE)}`);
      await p.evaluate(() => { window.__samePage = true; });
      const before = await p.textContent('#facts');
      const r = await fetch(EVENTS, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ order_id: LATE, service: 'mes-api', status: 'manufactured' }),
      });
      if (!r.ok) throw new Error(`order event refused: ${r.status} ${await r.text()}`);
      const started = Date.now();
      let updated = false;
      while (Date.now() - started < 20_000) {
        const facts = await p.textContent('#facts').catch(() => '');
        const resolved = await p.$('#alerts .alert[data-rule="production"][data-state="resolved"]');
        if (facts.includes('manufactured') && resolved) { updated = true; break; }
        await p.waitForTimeout(250);
      }
      result.live_before_had_manufactured = before.includes('manufactured');
      result.live_updated = updated;
      result.live_after_ms = Date.now() - started;
      result.live_same_page = await p.evaluate(() => window.__samePage === true);
      await inspect(p, 'order_live', { axe: false, shot: null });
    });
    if (adminContext) await adminContext.close();
  } finally {
    await browser.close();
  }
}

let adminPage = null;
let adminContext = null;

main()
  .catch((e) => {
    log('fatal:', e);
    result.errors.fatal = String((e && e.stack) || e);
  })
  .finally(() => {
    console.log(`RESULT ${JSON.stringify(result)}`);
    // Failed steps are in `errors`, asserted by the Rust test with everything else.
    process.exit(result.errors.fatal ? 1 : 0);
  });

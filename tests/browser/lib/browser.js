// Debian's chromium driven by playwright-core, the way every browser test of tracegate starts
// it: never a downloaded browser, a fresh profile (Playwright gives each launch its own
// --user-data-dir in a temporary directory and removes it on close), nothing talking to the
// network on its own. Each person in a test gets a context of their own: separate cookies.
'use strict';

const fs = require('node:fs');
const { chromium } = require('playwright-core');

const EXECUTABLE = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Starts chromium; the caller closes the returned browser. */
async function launch() {
  if (!fs.existsSync(EXECUTABLE)) {
    throw new Error(`${EXECUTABLE} not found: install Debian's chromium (scripts/test.sh does)`);
  }
  return chromium.launch({ executablePath: EXECUTABLE, headless: true, args: FLAGS, timeout: 60_000 });
}

module.exports = { launch, EXECUTABLE, FLAGS };

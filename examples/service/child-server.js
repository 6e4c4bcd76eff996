// The service as a child process, for the load test and the upload probe: main.js on a
// free port with the given flags, ready once it prints its "listening on" line.
'use strict';
const { spawn } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

/** Starts main.js with `flags` on a free port; resolves with { child, url, model } once it listens. */
function startServer(flags = []) {
  const child = spawn(process.execPath, [path.join(__dirname, 'main.js'), '--port', '0', ...flags], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk) => {
      text += chunk;
      const match = /listening on (http:\/\/\S+) \(model (.*)\)\n/.exec(text);
      if (match) {
        child.stdout.off('data', onData);
        child.stdout.resume(); // keep draining its output
        resolve({ child, url: match[1], model: JSON.parse(match[2]) });
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited with code ${code} before listening:\n${text}`)));
  });
}

/** SIGTERM (the graceful drain), SIGKILL after 15 s; resolves with the exit code or signal. */
function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode); // gone already
    const killer = setTimeout(() => child.kill('SIGKILL'), 15000);
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      resolve(code ?? signal);
    });
    child.kill('SIGTERM');
  });
}

module.exports = { startServer, stopServer };

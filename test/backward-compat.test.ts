// The backward-compatibility example runs as users run it (a separate process over
// the built package): softmax weights, unchanged, under FAVOR+ with m features.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

test('examples/backward-compat.js prints deviations that fall as m grows', () => {
  const script = path.join(__dirname, '..', 'examples', 'backward-compat.js');
  const output = execFileSync(process.execPath, [script, '--seq', '256', '--seeds', '2', '--features', '16,1024'], { encoding: 'utf8' });
  const rows = output
    .split('\n')
    .filter((line) => /^\| \d+ \|/.test(line))
    .map((line) => line.split('|').slice(1, -1).map((cell) => Number.parseFloat(cell)));
  expect(rows.map((r) => r[0])).toEqual([16, 1024]);
  for (const column of [1, 2]) {
    const [few, many] = rows.map((r) => r[column]);
    expect(Number.isFinite(few) && Number.isFinite(many)).toBe(true);
    expect(many).toBeGreaterThan(0);
    expect(many).toBeLessThan(few);
  }
});

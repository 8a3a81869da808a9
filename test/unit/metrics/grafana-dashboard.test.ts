/**
 * docs/grafana-dashboard.json and docs/metrics.md stay in step with the metrics: every metric a
 * panel queries is one the daemon exports, and every rebound_ family is documented.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/exports/catalog.js';
import { Metrics } from '../../../src/metrics/metrics.js';
import { parsePrometheusText } from '../../helpers/prom-text.js';
import { REPO } from '../../helpers/daemon-process.js';

async function families(): Promise<Set<string>> {
  const m = new Metrics({ catalog: new Catalog() });
  const f = parsePrometheusText(await m.scrape());
  m.close();
  return new Set(f.keys());
}

describe('docs of the metrics', () => {
  it('every metric the Grafana dashboard queries exists', async () => {
    const known = await families();
    const dash = JSON.parse(fs.readFileSync(path.join(REPO, 'docs/grafana-dashboard.json'), 'utf8'));
    const exprs: string[] = dash.panels.flatMap((p: { targets: Array<{ expr: string }> }) => p.targets.map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(15);
    const used = new Set(exprs.flatMap((e) => e.match(/\b(?:rebound|nodejs|process)_[a-z0-9_]+/g) ?? []));
    for (const name of used) expect(known.has(name.replace(/_bucket$/, '')), name).toBe(true);
  });

  it('docs/metrics.md lists every rebound_ family', async () => {
    const doc = fs.readFileSync(path.join(REPO, 'docs/metrics.md'), 'utf8');
    for (const name of await families()) if (name.startsWith('rebound_')) expect(doc, name).toContain(`\`${name}\``);
  });
});

'use strict';
// The paper's backward compatibility: a softmax Transformer's weights become a good
// Performer after a short fine-tuning. A byte-level language model (PerformerLM with exact
// softmax attention) is trained here on real text; its attention is then switched to
// FAVOR+ (the same weights, fixed random features): held-out loss right after the switch,
// then during N steps of fine-tuning under FAVOR+, against N more steps of softmax training.
//
// Corpus: the project's own documentation and the READMEs of its installed npm packages
// (English prose and code, bytes >= 128 mapped to spaces); the last 5 % is held out.
const fs = require('node:fs');
const path = require('node:path');
const { AdamW, PerformerLM } = require('..');

const ROOT = path.resolve(__dirname, '..');

function corpus(maxBytes) {
  const files = [path.join(ROOT, 'README.md')];
  const docs = path.join(ROOT, 'docs');
  for (const f of fs.readdirSync(docs).sort()) if (f.endsWith('.md')) files.push(path.join(docs, f));
  const modules = path.join(ROOT, 'node_modules');
  if (fs.existsSync(modules)) {
    for (const name of fs.readdirSync(modules).sort()) {
      const dirs = name.startsWith('@') ? fs.readdirSync(path.join(modules, name)).sort().map((n) => path.join(modules, name, n)) : [path.join(modules, name)];
      for (const dir of dirs) {
        const readme = ['README.md', 'readme.md', 'Readme.md'].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
        if (readme) files.push(readme);
      }
    }
  }
  const parts = [];
  let size = 0;
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    parts.push(bytes);
    size += bytes.length;
    if (size >= maxBytes) break;
  }
  const text = Buffer.concat(parts).subarray(0, maxBytes);
  const tokens = Int32Array.from(text, (b) => (b < 128 ? b : 32));
  return { tokens, files: parts.length };
}

// Deterministic window starts (xorshift32).
function sampler(seed) {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

function batch(tokens, starts, L) {
  const B = starts.length;
  const x = new Int32Array(B * L);
  const y = new Int32Array(B * L);
  starts.forEach((s, b) => {
    x.set(tokens.subarray(s, s + L), b * L);
    y.set(tokens.subarray(s + 1, s + L + 1), b * L);
  });
  return { x: { data: x, shape: [B, L] }, y: { data: y, shape: [B, L] } };
}

// Mean next-token cross-entropy (nats) of a batch, from the forward pass's logits.
function heldOutLoss(lm, held, attention) {
  const logits = lm.forwardSync(held.x, { attention }).data;
  const V = lm.config.numTokens;
  const y = held.y.data;
  let total = 0;
  for (let r = 0; r < y.length; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    let max = -Infinity;
    for (const v of row) if (v > max) max = v;
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    total += Math.log(sum) + max - row[y[r]];
  }
  return total / y.length;
}

/**
 * Runs the study. Options: model ({ dim, depth, heads, dim_head, nb_features }), L, batch,
 * pretrainSteps, fineTuneSteps, evalEvery, heldOutWindows, lr, corpusBytes, seed, progress.
 */
function study(o) {
  const { tokens, files } = corpus(o.corpusBytes);
  const split = Math.floor(tokens.length * 0.95);
  const train = tokens.subarray(0, split);
  const test = tokens.subarray(split);
  const L = o.L;
  const config = { num_tokens: 128, max_seq_len: L, causal: true, ...o.model };
  const next = sampler(o.seed);
  const trainBatch = () => batch(train, Array.from({ length: o.batch }, () => next(train.length - L - 1)), L);
  const heldStarts = Array.from({ length: o.heldOutWindows }, (_, i) => Math.floor((i * (test.length - L - 1)) / o.heldOutWindows));
  const held = batch(test, heldStarts, L);

  const base = PerformerLM.random(config, { seed: o.seed, numerics: 'exact' });
  const schedule = { lr: o.lr, warmupSteps: Math.min(50, Math.floor(o.pretrainSteps / 4)), decay: 'cosine', totalSteps: o.pretrainSteps, minLr: o.lr / 10 };
  const pre = new AdamW(base, { ...schedule, weightDecay: 0.01, maxGradNorm: 1 });
  const t0 = Date.now();
  for (let s = 1; s <= o.pretrainSteps; s++) {
    const { x, y } = trainBatch();
    base.lossAndGradSync(x, y, { attention: 'softmax' });
    pre.step();
    if (s % Math.max(1, Math.floor(o.pretrainSteps / 10)) === 0) o.progress?.(`pretrain ${s}/${o.pretrainSteps}`);
  }
  const pretrainSeconds = (Date.now() - t0) / 1000;
  // The two branches start from the same weights (and the same batches).
  const weights = base.parameters();
  const branch = () => PerformerLM.fromPerformerPytorch(weights, config, { numerics: 'exact' });
  const softmax = branch();
  const favor = branch();
  const before = { softmax: heldOutLoss(softmax, held, 'softmax'), favor: heldOutLoss(favor, held, 'favor') };
  const curve = [{ step: 0, softmax: before.softmax, favor: before.favor }];
  const fine = { lr: o.lr / 3, weightDecay: 0.01, maxGradNorm: 1 };
  const optimizers = { softmax: new AdamW(softmax, fine), favor: new AdamW(favor, fine) };
  const t1 = Date.now();
  for (let s = 1; s <= o.fineTuneSteps; s++) {
    const { x, y } = trainBatch();
    softmax.lossAndGradSync(x, y, { attention: 'softmax' });
    optimizers.softmax.step();
    favor.lossAndGradSync(x, y, { attention: 'favor' });
    optimizers.favor.step();
    if (s % o.evalEvery === 0 || s === o.fineTuneSteps) {
      curve.push({ step: s, softmax: heldOutLoss(softmax, held, 'softmax'), favor: heldOutLoss(favor, held, 'favor') });
      o.progress?.(`fine-tune ${s}/${o.fineTuneSteps}`);
    }
  }
  const after = curve[curve.length - 1];
  return {
    options: { ...o, progress: undefined },
    corpus: { bytes: tokens.length, files, heldOutBytes: test.length },
    pretrainSeconds,
    fineTuneSeconds: (Date.now() - t1) / 1000,
    before,
    after: { softmax: after.softmax, favor: after.favor },
    // Of the gap FAVOR+ opened at the switch, the part fine-tuning closed (1 = all of it).
    gapClosed: (before.favor - after.favor) / Math.max(1e-12, before.favor - before.softmax),
    curve,
  };
}

/** A line chart of held-out loss against fine-tuning steps (bench/lib/chart.js renders it). */
function chartSpec(result) {
  const run = (name, loss) => ({ name, points: result.curve.map((p) => ({ x: p.step, y: loss(p) / Math.LN2 })) });
  return {
    title: 'Backward compatibility: softmax-trained weights fine-tuned under FAVOR+',
    subtitle: `byte-level LM, held-out bits per byte; ${result.options.pretrainSteps} softmax steps before step 0`,
    x: { title: 'fine-tuning steps', scale: 'linear' },
    y: { title: 'held-out bits per byte', scale: 'linear' },
    width: 520,
    height: 300,
    series: [run('softmax attention, training continued', (p) => p.softmax), run('FAVOR+ (same weights), fine-tuned', (p) => p.favor)],
  };
}

/** The study as markdown: what was run, the table of held-out losses, and what it shows. */
function markdown(r) {
  const o = r.options;
  const bits = (nats) => (nats / Math.LN2).toFixed(3);
  const lines = [
    `Byte-level PerformerLM (dim ${o.model.dim}, depth ${o.model.depth}, ${o.model.heads} heads of ${o.model.dim_head}, FAVOR+ with m = ${o.model.nb_features} ` +
      `fixed orthogonal features), L = ${o.L}, batches of ${o.batch}, AdamW. Corpus: ${r.corpus.bytes} bytes from ${r.corpus.files} files (the project's ` +
      `docs and its npm packages' READMEs), the last ${r.corpus.heldOutBytes} held out; held-out loss over ${o.heldOutWindows} windows. ` +
      `Pre-training with exact softmax attention: ${o.pretrainSteps} steps (${r.pretrainSeconds.toFixed(0)} s); then both branches take the same ` +
      `${o.fineTuneSteps} batches (${r.fineTuneSeconds.toFixed(0)} s for both).`,
    '',
    '| fine-tuning steps | softmax, training continued (bits/byte) | FAVOR+, fine-tuned (bits/byte) | gap |',
    '|---:|---:|---:|---:|',
    ...r.curve.map((p) => `| ${p.step} | ${bits(p.softmax)} | ${bits(p.favor)} | ${bits(p.favor - p.softmax)} |`),
    '',
    `At the switch FAVOR+ costs ${bits(r.before.favor - r.before.softmax)} bits/byte over softmax attention; after ${o.fineTuneSteps} steps the gap is ` +
      `${bits(r.after.favor - r.after.softmax)} (fine-tuning closed ${(100 * r.gapClosed).toFixed(0)} % of the FAVOR+ model's initial excess; ` +
      'the softmax model kept improving meanwhile).',
  ];
  return lines.join('\n');
}

module.exports = { study, chartSpec, markdown, corpus };

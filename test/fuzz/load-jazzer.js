// Makes Jazzer.js's native fuzzer (libFuzzer, prebuilt in the @jazzer.js/fuzzer npm
// package) load on Linux systems older than the one it was built on.
//
// The x86-64 Linux prebuild of @jazzer.js/fuzzer 4.0.0 asks for glibc 2.38 and
// libstdc++ GLIBCXX_3.4.32 (GCC 13) for three symbols only:
//   __isoc23_strtol, __isoc23_strtoul  C23 strtol/strtoul: the same functions, except
//                                      that they also read a "0b" prefix, which the
//                                      fuzzer's option parsing never meets;
//   std::ios_base_library_init         a marker symbol that no code calls (it has no
//                                      relocation).
// On an older system (Debian 12: glibc 2.36, GCC 12) dlopen refuses the file. `require()`
// of this module tries the prebuild as it is; when that fails for these versions only, it
// writes a copy to build/fuzz/ in which those two version needs name versions the system
// has (GLIBC_2.2.5, GLIBCXX_3.4.20) and the C23 names are the plain ones (each is a suffix
// of the other in the string table, so no string changes), checks that nothing else was
// asked for, loads the copy and puts it in require's cache under the prebuild's path, so
// that @jazzer.js/fuzzer uses it. node_modules is left as installed.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const fuzzerDir = path.dirname(require.resolve('@jazzer.js/fuzzer/package.json', { paths: [root] }));
const prebuild = path.join(fuzzerDir, 'prebuilds', `fuzzer-${process.platform}-${process.arch}.node`);
const patchedPath = path.join(root, 'build', 'fuzz', `fuzzer-${process.platform}-${process.arch}.node`);

// Version needs rewritten to versions every glibc / libstdc++ since 2004 has.
const VERSIONS = { 'GLIBC_2.38': 'GLIBC_2.2.5', 'GLIBCXX_3.4.32': 'GLIBCXX_3.4.20' };
// Imported symbols renamed to the suffix of their own name.
const SYMBOLS = { __isoc23_strtol: 'strtol', __isoc23_strtoul: 'strtoul' };

const SHT_DYNSYM = 11;
const SHT_GNU_VERNEED = 0x6ffffffe;

/** The SysV ELF hash of a name (vna_hash of a version need). */
function elfHash(name) {
  let h = 0;
  for (const c of Buffer.from(name, 'latin1')) {
    h = ((h << 4) + c) >>> 0;
    const g = h & 0xf0000000;
    if (g !== 0) h ^= g >>> 24;
    h = (h & ~g) >>> 0;
  }
  return h >>> 0;
}

/** A patched copy of an ELF64 little-endian shared object (see the top of this file). */
function patchElf(input) {
  const elf = Buffer.from(input);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error('not an ELF64 little-endian file');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const sections = [];
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * shentsize;
    sections.push({
      type: elf.readUInt32LE(at + 4),
      offset: Number(elf.readBigUInt64LE(at + 0x18)),
      size: Number(elf.readBigUInt64LE(at + 0x20)),
      link: elf.readUInt32LE(at + 0x28),
      info: elf.readUInt32LE(at + 0x2c),
    });
  }
  const dynsym = sections.find((s) => s.type === SHT_DYNSYM);
  const verneed = sections.find((s) => s.type === SHT_GNU_VERNEED);
  if (!dynsym || !verneed) throw new Error('no dynamic symbols or version needs');
  const dynstr = sections[dynsym.link];
  const str = (offset) => {
    const start = dynstr.offset + offset;
    return elf.toString('latin1', start, elf.indexOf(0, start));
  };

  // Version needs: remember where each name's string is, then rewrite the wanted ones.
  const aux = [];
  let need = verneed.offset;
  for (let n = 0; n < verneed.info; n++) {
    const count = elf.readUInt16LE(need + 2);
    let at = need + elf.readUInt32LE(need + 8);
    for (let k = 0; k < count; k++) {
      aux.push({ at, name: str(elf.readUInt32LE(at + 8)), nameOffset: elf.readUInt32LE(at + 8) });
      at += elf.readUInt32LE(at + 12);
    }
    need += elf.readUInt32LE(need + 12);
  }
  const done = new Set();
  for (const a of aux) {
    const target = VERSIONS[a.name];
    if (target === undefined) continue;
    const existing = aux.find((b) => b.name === target);
    if (existing === undefined) throw new Error(`no version need ${target} to reuse for ${a.name}`);
    elf.writeUInt32LE(elfHash(target), a.at);
    elf.writeUInt32LE(existing.nameOffset, a.at + 8);
    done.add(a.name);
  }

  // Imported symbols: point their names at the plain name inside the C23 one.
  for (let at = dynsym.offset; at < dynsym.offset + dynsym.size; at += 24) {
    const name = str(elf.readUInt32LE(at));
    const target = SYMBOLS[name];
    if (target === undefined) continue;
    if (!name.endsWith(target)) throw new Error(`${name} does not end with ${target}`);
    elf.writeUInt32LE(elf.readUInt32LE(at) + name.length - target.length, at);
    done.add(name);
  }
  for (const name of [...Object.keys(VERSIONS), ...Object.keys(SYMBOLS)]) {
    if (!done.has(name)) throw new Error(`${name} not found`);
  }
  return elf;
}

function loadFuzzerAddon() {
  let firstError;
  try {
    return require(prebuild);
  } catch (error) {
    firstError = error;
  }
  // Only a refusal for exactly the versions patched here is worked around.
  const missing = [...String(firstError.message).matchAll(/version `([^']+)' not found/g)].map((m) => m[1]);
  if (process.platform !== 'linux' || process.arch !== 'x64' || missing.length === 0 || missing.some((v) => !(v in VERSIONS))) {
    throw firstError;
  }
  const source = fs.readFileSync(prebuild);
  const patched = patchElf(source);
  const current = fs.existsSync(patchedPath) ? fs.readFileSync(patchedPath) : null;
  if (current === null || !current.equals(patched)) {
    fs.mkdirSync(path.dirname(patchedPath), { recursive: true });
    const tmp = `${patchedPath}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, patched);
    fs.renameSync(tmp, patchedPath);
  }
  const addon = require(patchedPath);
  const entry = require.cache[patchedPath];
  require.cache[prebuild] = entry;
  return addon;
}

loadFuzzerAddon();

module.exports = { patchElf, elfHash, prebuild };

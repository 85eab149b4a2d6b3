// Unknown-key detection. The schema validators that kubernetes-models ships
// are compiled (ajv standalone) and accept any extra property, so a
// misspelled key (`readinesProbe`, `containerport`) passes them silently.
// The same packages ship TypeScript declarations with every property of
// every type; this module reads those .d.ts files into a small structural
// schema and walks objects against it:
//
//   type   := member ("|" member)*
//   member := primary ("[]")*
//   primary:= "{" (prop | index)* "}" | "Array<" type ">" | "(" type ")"
//           | string/number literal | identifier ["<" type ("," type)* ">"]
//   prop   := ("\"name\"" | name) ["?"] ":" type ";"
//   index  := "[" name ":" type "]" ":" type ";"
//
// Identifiers resolve through the file's imports, `export { A as B }`
// aliases, interfaces and type aliases. Anything the walker cannot type
// (any, unknown, a name it cannot resolve) is accepted as is: this check
// only ever reports keys it knows to be wrong.
import fs from "node:fs";
import path from "node:path";

const PRIMITIVES = new Set(["string", "number", "boolean", "any", "unknown", "null", "undefined", "object", "never"]);

function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

function tokenize(src) {
  const tokens = [];
  const re = /\s*(?:("(?:[^"\\]|\\.)*")|('(?:[^'\\]|\\.)*')|([A-Za-z_$][\w$]*)|(-?\d+(?:\.\d+)?)|(\S))/gy;
  let m;
  while ((m = re.exec(src)) !== null) {
    if (m[0].trim() === "") break;
    if (m[1] !== undefined || m[2] !== undefined) tokens.push({ t: "str", v: JSON.parse(m[1] ?? `"${m[2].slice(1, -1)}"`) });
    else if (m[3] !== undefined) tokens.push({ t: "id", v: m[3] });
    else if (m[4] !== undefined) tokens.push({ t: "num", v: m[4] });
    else tokens.push({ t: "p", v: m[5] });
  }
  return tokens;
}

class Parser {
  constructor(tokens) { this.k = tokens; this.i = 0; }
  peek(o = 0) { return this.k[this.i + o]; }
  next() { return this.k[this.i++]; }
  is(v, o = 0) { const t = this.peek(o); return t && t.t === "p" && t.v === v; }
  eat(v) { if (!this.is(v)) throw new Error(`expected ${v} at token ${this.i}: ${JSON.stringify(this.peek())}`); this.i++; }
  type() {
    if (this.is("|")) this.next();
    const options = [this.member()];
    while (this.is("|")) { this.next(); options.push(this.member()); }
    return options.length === 1 ? options[0] : { kind: "union", options };
  }
  member() {
    let t = this.primary();
    while (this.is("[") && this.is("]", 1)) { this.next(); this.next(); t = { kind: "array", items: t }; }
    return t;
  }
  primary() {
    const t = this.peek();
    if (this.is("{")) return this.objectBody();
    if (this.is("(")) { this.next(); const inner = this.type(); this.eat(")"); return inner; }
    if (t.t === "str" || t.t === "num") { this.next(); return { kind: "scalar" }; }
    if (t.t === "id") {
      this.next();
      if (t.v === "Array" && this.is("<")) { this.next(); const items = this.type(); this.eat(">"); return { kind: "array", items }; }
      if (this.is("<")) { this.next(); this.type(); while (this.is(",")) { this.next(); this.type(); } this.eat(">"); }
      if (PRIMITIVES.has(t.v) || t.v === "true" || t.v === "false") return { kind: t.v === "any" || t.v === "unknown" || t.v === "object" ? "any" : "scalar" };
      return { kind: "ref", name: t.v };
    }
    throw new Error(`unexpected token ${JSON.stringify(t)}`);
  }
  objectBody() {
    this.eat("{");
    const props = new Map();
    let index = null;
    while (!this.is("}")) {
      if (this.is("[")) {
        this.next(); this.next(); this.eat(":"); this.type(); this.eat("]"); this.eat(":");
        index = this.type();
      } else {
        const name = this.next();
        if (name.t !== "str" && name.t !== "id") throw new Error(`bad property name ${JSON.stringify(name)}`);
        if (this.is("?")) this.next();
        this.eat(":");
        props.set(name.v, this.type());
      }
      if (this.is(";") || this.is(",")) this.next();
    }
    this.eat("}");
    return { kind: "object", props, index };
  }
}

// One .d.ts file: its interfaces and type aliases (by local name), its
// imports (local name -> [file, exported name]) and its export aliases.
class DtsFile {
  constructor(file, resolver) {
    this.file = file;
    this.resolver = resolver;
    const src = stripComments(fs.readFileSync(file, "utf8"));
    this.imports = new Map();
    for (const m of src.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
      for (const part of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        const [orig, local] = part.split(/\s+as\s+/).map((s) => s.trim());
        this.imports.set(local ?? orig, [m[2], orig]);
      }
    }
    this.aliases = new Map();
    for (const m of src.matchAll(/export\s*\{([^}]*)\}\s*;/g)) {
      for (const part of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        const [orig, exported] = part.split(/\s+as\s+/).map((s) => s.trim());
        this.aliases.set(exported ?? orig, orig);
      }
    }
    this.decls = new Map();
    for (const m of src.matchAll(/\b(?:export\s+)?(?:declare\s+)?interface\s+(\w+)(?:<[^>{]*>)?(?:\s+extends\s+[^{]+)?\s*\{/g)) {
      const body = matchBraces(src, m.index + m[0].length - 1);
      this.decls.set(m[1], { src: body });
    }
    for (const m of src.matchAll(/\b(?:export\s+)?(?:declare\s+)?type\s+(\w+)(?:<[^>=]*>)?\s*=/g)) {
      let end = m.index + m[0].length, depth = 0;
      for (; end < src.length; end++) {
        const c = src[end];
        if (c === "{" || c === "(" || c === "<" || c === "[") depth++;
        else if (c === "}" || c === ")" || c === ">" || c === "]") depth--;
        else if (c === ";" && depth === 0) break;
      }
      this.decls.set(m[1], { src: src.slice(m.index + m[0].length, end) });
    }
  }
  lookup(name) {
    const local = this.aliases.get(name) ?? name;
    const d = this.decls.get(local);
    if (d) {
      if (!d.type) {
        d.type = { kind: "any" };  // breaks cycles while parsing
        d.type = new Parser(tokenize(d.src)).type();
      }
      return { type: d.type, file: this };
    }
    const imp = this.imports.get(local);
    if (imp) {
      const target = this.resolver.resolveModule(this.file, imp[0]);
      if (target) return this.resolver.load(target).lookup(imp[1]);
    }
    return null;
  }
}

function matchBraces(src, open) {
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    if (src[i] === "{") depth++;
    else if (src[i] === "}" && --depth === 0) return src.slice(open, i + 1);
  }
  throw new Error("unbalanced braces");
}

export class KeySchemas {
  constructor(nodeModules) { this.nodeModules = nodeModules; this.files = new Map(); }
  load(file) {
    let f = this.files.get(file);
    if (!f) { f = new DtsFile(file, this); this.files.set(file, f); }
    return f;
  }
  resolveModule(fromFile, spec) {
    const base = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec) : path.join(this.nodeModules, spec);
    for (const cand of [`${base}.d.ts`, path.join(base, "index.d.ts")]) if (fs.existsSync(cand)) return cand;
    return null;
  }
  // The .d.ts of a top-level kind, or null when the packages have none.
  fileFor(apiVersion, kind) {
    const group = apiVersion.includes("/") ? apiVersion : `v1`;
    const candidates = [
      path.join(this.nodeModules, "kubernetes-models", group, `${kind}.d.ts`),
      path.join(this.nodeModules, "@kubernetes-models/prometheus-operator", group, `${kind}.d.ts`),
    ];
    return candidates.find((c) => fs.existsSync(c)) ?? null;
  }
  // Every key of `obj` that its type does not declare, as JSON-pointer-ish paths.
  unknownKeys(obj) {
    const file = this.fileFor(obj.apiVersion ?? "", obj.kind ?? "");
    if (!file) return null;
    const found = this.load(file).lookup(`I${obj.kind}`);
    if (!found) return null;
    const out = [];
    walk(obj, found.type, found.file, "", out);
    return out;
  }
}

function resolve(type, file) {
  let t = type, f = file;
  for (let n = 0; t.kind === "ref" && n < 20; n++) {
    const r = f.lookup(t.name);
    if (!r) return { type: { kind: "any" }, file: f };
    t = r.type; f = r.file;
  }
  return { type: t, file: f };
}

function walk(value, type, file, at, out) {
  if (value === null || typeof value !== "object") return;
  const r = resolve(type, file);
  const t = r.type;
  if (t.kind === "any" || t.kind === "scalar") return;
  if (t.kind === "union") {
    const shaped = t.options.map((o) => resolve(o, r.file))
      .filter((o) => (Array.isArray(value) ? o.type.kind === "array" : o.type.kind === "object" || o.type.kind === "any"));
    if (shaped.length === 1) walk(value, shaped[0].type, shaped[0].file, at, out);
    return;  // zero or several shapes: not ours to judge
  }
  if (t.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, t.items, r.file, `${at}[${i}]`, out));
    return;
  }
  if (t.kind === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const p = t.props.get(k);
      if (p) walk(v, p, r.file, `${at}.${k}`, out);
      else if (t.index) walk(v, t.index, r.file, `${at}.${k}`, out);
      else out.push({ path: `${at}.${k}`.slice(1), key: k, known: [...t.props.keys()] });
    }
  }
}

// The closest known key, for "did you mean" in messages.
export function closest(key, known) {
  let best = null, bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) { bestD = d; best = k; }
  }
  return bestD <= Math.max(2, Math.floor(key.length / 3)) ? best : null;
}

function editDistance(a, b) {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]; dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}

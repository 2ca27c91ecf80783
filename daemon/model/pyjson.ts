/**
 * JSON text exactly as Python's `json.dumps(obj, indent=2, sort_keys=True)` writes it
 * (ensure_ascii escapes, ", "/": " separators, floats in Python `repr` form), so files that
 * PEFT writes can be reproduced byte for byte. JS numbers carry no int/float distinction:
 * wrap a value in `pyFloat` to have it written as a Python float (`0.0`, `1e-05`).
 */
export interface PyFloat {
  readonly pyFloat: number;
}
export const pyFloat = (v: number): PyFloat => ({ pyFloat: v });

function isPyFloat(v: unknown): v is PyFloat {
  return typeof v === 'object' && v !== null && 'pyFloat' in v && Object.keys(v).length === 1;
}

/** Python float repr: shortest round-trip digits, exponent form when exp < -4 or >= 16. */
export function pyFloatRepr(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? 'Infinity' : '-Infinity';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = v.toExponential().split('e') as [string, string];
  const exp = Number(expStr);
  if (exp < -4 || exp >= 16) {
    const e = Math.abs(exp);
    return `${mant}e${exp < 0 ? '-' : '+'}${e < 10 ? '0' : ''}${e}`;
  }
  const s = String(v);
  if (s.includes('e')) {
    // JS uses exponent form below 1e-6 but Python does not until 1e-4; expand.
    return v.toFixed(Math.max(0, -exp + (mant.replace('-', '').replace('.', '').length - 1)));
  }
  return s.includes('.') ? s : `${s}.0`;
}

function pyString(s: string): string {
  // ensure_ascii escapes everything outside ' '..'~' (DEL included), per UTF-16 code unit.
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function dump(v: unknown, indent: string): string {
  if (v === null || v === undefined) return 'null';
  if (isPyFloat(v)) return pyFloatRepr(v.pyFloat);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloatRepr(v);
  if (typeof v === 'string') return pyString(v);
  const inner = indent + '  ';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => inner + dump(x, inner)).join(',\n')}\n${indent}]`;
  }
  const keys = Object.keys(v as object).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${inner}${pyString(k)}: ${dump((v as Record<string, unknown>)[k], inner)}`).join(',\n')}\n${indent}}`;
}

export function pythonJsonDumps(value: unknown): string {
  return dump(value, '');
}

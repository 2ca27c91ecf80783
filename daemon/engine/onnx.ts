/**
 * Graph → ONNX ModelProto bytes (ir_version 10, opset 21, com.microsoft opset 1).
 *
 * Large weights can go to an external-data file beside the model (ONNX external data: the
 * TensorProto keeps dims and type, data_location = EXTERNAL, and `location`/`offset`/`length`
 * entries point into the file). A single protobuf cannot exceed 2 GB, so models above that must use
 * it; the session is then created from the model's path so onnxruntime finds the file beside it.
 */
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AligndError } from '../base/errors.js';
import type { Attr, Graph, Node } from './graph.js';
import { type Sink, bytesOf, sink, writeBytes, writeFloat, writeMessage, writeString, writeVarint } from './proto.js';
import { type HostTensor, onnxType, rawBytes } from './tensor.js';

export const IR_VERSION = 10;
export const OPSET = 21;

/** Where initializers of at least `thresholdBytes` go; offsets are aligned to `align` bytes. */
export interface ExternalData { dir: string; file: string; thresholdBytes: number; align?: number }

export interface Emitted {
  bytes: Uint8Array;
  /** Present when some tensors went external: write `bytes` to this path (done) and load from it. */
  modelPath?: string;
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

function encodeTensor(s: Sink, name: string, t: HostTensor, external?: { location: string; offset: number; length: number }): void {
  for (const d of t.dims) writeVarint(s, 1, d);
  writeVarint(s, 2, onnxType[t.dtype]);
  if (name !== '') writeString(s, 8, name);
  if (external === undefined) {
    writeBytes(s, 9, rawBytes(t));
    return;
  }
  for (const [k, v] of [['location', external.location], ['offset', String(external.offset)], ['length', String(external.length)]] as const) {
    writeMessage(s, 13, (e) => { writeString(e, 1, k); writeString(e, 2, v); });
  }
  writeVarint(s, 14, 1);
}

function encodeAttr(s: Sink, name: string, a: Attr): void {
  writeString(s, 1, name);
  switch (a.type) {
    case 'float': writeFloat(s, 2, a.v); break;
    case 'int': writeVarint(s, 3, a.v); break;
    case 'string': writeString(s, 4, a.v); break;
    case 'tensor': writeMessage(s, 5, (t) => encodeTensor(t, '', a.v)); break;
    case 'floats': for (const f of a.v) writeFloat(s, 7, f); break;
    case 'ints': for (const i of a.v) writeVarint(s, 8, i); break;
  }
  writeVarint(s, 20, ATTR_TYPE[a.type]);
}

function encodeNode(s: Sink, n: Node): void {
  // Trailing omitted optional inputs are left out rather than written as '': onnxruntime 1.30's
  // extended graph optimizations crash the process (SIGSEGV) on a float32 LayerNormalization whose
  // absent bias is given as a trailing ''. Omitting them is the same model to the ONNX spec.
  let given = n.inputs.length;
  while (given > 0 && n.inputs[given - 1] === '') given--;
  for (const i of n.inputs.slice(0, given)) writeString(s, 1, i);
  for (const o of n.outputs) writeString(s, 2, o);
  writeString(s, 3, n.name);
  writeString(s, 4, n.op);
  for (const k of Object.keys(n.attrs).sort()) writeMessage(s, 5, (a) => encodeAttr(a, k, n.attrs[k]!));
  if (n.domain !== '') writeString(s, 7, n.domain);
}

function encodeValueInfo(s: Sink, g: Graph, name: string, withShape: boolean): void {
  const info = g.values.get(name)!;
  writeString(s, 1, name);
  writeMessage(s, 2, (type) => writeMessage(type, 1, (tt) => {
    writeVarint(tt, 1, onnxType[info.dtype]);
    if (!withShape || info.shape === undefined) return;
    writeMessage(tt, 2, (shape) => {
      for (const d of info.shape!) {
        writeMessage(shape, 1, (dim) => {
          if (typeof d === 'number') writeVarint(dim, 1, d);
          else if (!d.startsWith('?')) writeString(dim, 2, d);
        });
      }
    });
  }));
}

/** Serialise a graph. With `external`, big initializers go to `dir/file` and the model to `dir/<graph name>.onnx`. */
export function toOnnx(g: Graph, opts: { external?: ExternalData } = {}): Emitted {
  if (g.outputs.length === 0) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `graph '${g.name}' has no outputs`, { action: 'mark results with output()' });
  }
  const ext = opts.external;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const placeExternal = (t: HostTensor): { location: string; offset: number; length: number } | undefined => {
    if (ext === undefined || t.data.byteLength < ext.thresholdBytes) return undefined;
    const align = ext.align ?? 4096;
    const padded = Math.ceil(offset / align) * align;
    if (padded > offset) chunks.push(new Uint8Array(padded - offset));
    const bytes = rawBytes(t);
    chunks.push(bytes);
    const entry = { location: basename(ext.file), offset: padded, length: bytes.length };
    offset = padded + bytes.length;
    return entry;
  };

  const model = sink(1 << 16);
  writeVarint(model, 1, IR_VERSION);
  writeString(model, 2, 'alignd');
  writeString(model, 3, '0.1');
  writeMessage(model, 7, (gs) => {
    for (const n of g.nodes) writeMessage(gs, 1, (ns) => encodeNode(ns, n));
    writeString(gs, 2, g.name);
    for (const [name, t] of g.initializers) writeMessage(gs, 5, (ts) => encodeTensor(ts, name, t, placeExternal(t)));
    for (const name of g.inputs) writeMessage(gs, 11, (vs) => encodeValueInfo(vs, g, name, true));
    for (const name of g.outputs) writeMessage(gs, 12, (vs) => encodeValueInfo(vs, g, name, false));
  });
  writeMessage(model, 8, (os) => { writeString(os, 1, ''); writeVarint(os, 2, OPSET); });
  writeMessage(model, 8, (os) => { writeString(os, 1, 'com.microsoft'); writeVarint(os, 2, 1); });
  const bytes = bytesOf(model);
  if (ext === undefined || chunks.length === 0) return { bytes };
  const data = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) { data.set(c, at); at += c.length; }
  writeFileSync(join(ext.dir, basename(ext.file)), data);
  const modelPath = join(ext.dir, `${g.name}.onnx`);
  writeFileSync(modelPath, bytes);
  return { bytes, modelPath };
}

/**
 * Graph → ONNX ModelProto bytes (ir_version 10, opset 21, com.microsoft opset 1).
 *
 * Weights can live outside the protobuf as ONNX external data (the TensorProto keeps dims and
 * type, data_location = EXTERNAL, and `location`/`offset`/`length` point into a file). A protobuf
 * cannot exceed 2 GB, and onnxruntime memory-maps external data instead of copying it, so every
 * session of a model that reads the same file shares one physical copy (daemon/engine/README.md).
 * Two kinds go external: ExternalTensor initializers (already in a file, e.g. a safetensors
 * checkpoint: referenced where they are) and, with `external`, in-memory tensors of at least
 * `thresholdBytes`, written tensor by tensor to `dir/file` (no buffer of the whole set). The model
 * bytes stay in memory; `externalDir` is the folder onnxruntime resolves the locations in.
 */
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AligndError } from '../base/errors.js';
import { type Attr, type Graph, type Initializer, type Node, isExternal } from './graph.js';
import { type Sink, bytesOf, sink, writeBytes, writeFloat, writeMessage, writeString, writeVarint } from './proto.js';
import { type HostTensor, onnxType, rawBytes } from './tensor.js';

export const IR_VERSION = 10;
export const OPSET = 21;

/** Where in-memory initializers of at least `thresholdBytes` go; offsets are aligned to `align` bytes. */
export interface ExternalData { dir: string; file: string; thresholdBytes: number; align?: number }

export interface Emitted {
  bytes: Uint8Array;
  /** The folder external-data locations are relative to (absent: the model has none). */
  externalDir?: string;
}

/** Bytes written per write call: well under the 2 GiB a single write may take. */
const WRITE_CHUNK = 64 * 2 ** 20;

/**
 * Write tensors at their offsets into `path`, `chunkBytes` per write (via a temporary file and a
 * rename, so a session mapping the old file keeps it).
 */
export function writeExternalFile(path: string, parts: { offset: number; bytes: Uint8Array }[], chunkBytes = WRITE_CHUNK): void {
  const tmp = join(path, '..', `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    for (const p of parts) {
      for (let at = 0; at < p.bytes.byteLength; at += chunkBytes) {
        const n = Math.min(chunkBytes, p.bytes.byteLength - at);
        let done = 0;
        while (done < n) done += writeSync(fd, p.bytes, at + done, n - done, p.offset + at + done);
      }
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

function encodeTensor(s: Sink, name: string, t: Initializer, external?: { location: string; offset: number; length: number }): void {
  for (const d of t.dims) writeVarint(s, 1, d);
  writeVarint(s, 2, onnxType[t.dtype]);
  if (name !== '') writeString(s, 8, name);
  if (external === undefined) {
    writeBytes(s, 9, rawBytes(t as HostTensor));
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

/** Serialise a graph (see the file comment for what goes external and where). */
export function toOnnx(g: Graph, opts: { external?: ExternalData } = {}): Emitted {
  if (g.outputs.length === 0) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `graph '${g.name}' has no outputs`, { action: 'mark results with output()' });
  }
  const ext = opts.external;
  let externalDir = ext?.dir;
  for (const [name, t] of g.initializers) {
    if (!isExternal(t)) continue;
    externalDir ??= t.external.dir;
    if (t.external.dir !== externalDir) {
      throw new AligndError('ENGINE_INVALID_GRAPH', `initializer '${name}' is in ${t.external.dir} but other external data of graph '${g.name}' is in ${externalDir}`,
        { action: 'keep every external tensor of one program in one folder (onnxruntime reads external data from one folder per session)' });
    }
  }
  const parts: { offset: number; bytes: Uint8Array }[] = [];
  let offset = 0;
  const placeExternal = (t: Initializer): { location: string; offset: number; length: number } | undefined => {
    if (isExternal(t)) return t.external;
    if (ext === undefined || t.data.byteLength < ext.thresholdBytes) return undefined;
    const align = ext.align ?? 4096;
    const at = Math.ceil(offset / align) * align;
    const bytes = rawBytes(t);
    parts.push({ offset: at, bytes });
    offset = at + bytes.length;
    return { location: basename(ext.file), offset: at, length: bytes.length };
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
  if (ext !== undefined && parts.length > 0) writeExternalFile(join(ext.dir, basename(ext.file)), parts);
  return externalDir === undefined || (parts.length === 0 && ![...g.initializers.values()].some(isExternal)) ? { bytes } : { bytes, externalDir };
}

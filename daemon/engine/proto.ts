/**
 * A minimal protobuf writer for the parts of onnx.proto that alignd emits (ModelProto, GraphProto,
 * NodeProto, TensorProto, ValueInfoProto, AttributeProto). Field numbers are those of
 * onnx/onnx.proto (ONNX 1.16). Output is deterministic: fields are written in a fixed order.
 *
 * Wire format (protobuf encoding guide): key = (field << 3) | wire type; 0 = varint,
 * 2 = length-delimited, 5 = 32-bit. Repeated scalars in attributes are written unpacked (proto2 default).
 */

/** Growable byte sink. Nested messages are encoded into their own sink and copied in with a length. */
export interface Sink { buf: Uint8Array; len: number }

export function sink(capacity = 256): Sink {
  return { buf: new Uint8Array(capacity), len: 0 };
}

function reserve(s: Sink, n: number): void {
  if (s.len + n <= s.buf.length) return;
  let cap = s.buf.length * 2;
  while (cap < s.len + n) cap *= 2;
  const next = new Uint8Array(cap);
  next.set(s.buf.subarray(0, s.len));
  s.buf = next;
}

export function bytesOf(s: Sink): Uint8Array {
  return s.buf.subarray(0, s.len);
}

/** Varint of a non-negative or negative integer (negatives as 10-byte two's complement, as int64). */
function varint(s: Sink, value: number | bigint): void {
  let v = BigInt.asUintN(64, BigInt(value));
  reserve(s, 10);
  while (v >= 0x80n) {
    s.buf[s.len++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  s.buf[s.len++] = Number(v);
}

function key(s: Sink, field: number, wire: 0 | 2 | 5): void {
  varint(s, (field << 3) | wire);
}

export function writeVarint(s: Sink, field: number, value: number | bigint): void {
  key(s, field, 0);
  varint(s, value);
}

export function writeBytes(s: Sink, field: number, bytes: Uint8Array): void {
  key(s, field, 2);
  varint(s, bytes.length);
  reserve(s, bytes.length);
  s.buf.set(bytes, s.len);
  s.len += bytes.length;
}

const utf8 = new TextEncoder();
export function writeString(s: Sink, field: number, text: string): void {
  writeBytes(s, field, utf8.encode(text));
}

export function writeFloat(s: Sink, field: number, value: number): void {
  key(s, field, 5);
  reserve(s, 4);
  new DataView(s.buf.buffer, s.buf.byteOffset).setFloat32(s.len, value, true);
  s.len += 4;
}

export function writeMessage(s: Sink, field: number, encode: (inner: Sink) => void): void {
  const inner = sink();
  encode(inner);
  writeBytes(s, field, bytesOf(inner));
}

/**
 * JSON form of codec values for the local HTTP API (browsers speak JSON): binary values travel as
 * `{"$bytes": "<base64>"}`. Only the HTTP front door uses this; libp2p streams use CBOR.
 */
export function toJsonText(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString('base64') };
    if (typeof v === 'bigint') return Number(v);
    return v;
  });
}

export function fromJsonText(text: string): unknown {
  return JSON.parse(text, (_k, v) => {
    if (
      v &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      typeof v.$bytes === 'string' &&
      Object.keys(v).length === 1
    ) {
      return new Uint8Array(Buffer.from(v.$bytes, 'base64'));
    }
    return v;
  });
}

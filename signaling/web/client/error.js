// The error type of the client library: an Error with a protocol error `code`.

/** An Error with a protocol error `code` (e.g. `unauthorized`, `forbidden`). */
export class CallError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'CallError';
    this.code = code;
  }
}

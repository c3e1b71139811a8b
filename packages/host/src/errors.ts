// The base of every driver family's error (StorageError, NetworkError, InstanceError): a message
// for people and a stable code the agent acts on. A failed host command behind it stays a
// CommandError, kept as the cause. Each family names itself (`name`): a bundler may rename classes.
export class DriverError<Code extends string> extends Error {
  readonly code: Code;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

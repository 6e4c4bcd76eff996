// Error assertions by name and code: errors made by the addon come from another
// realm than jest's test context, so `instanceof RangeError` is not reliable.
export interface ExpectedError {
  name: 'TypeError' | 'RangeError' | 'Error';
  code: string;
  message: RegExp;
}

function check(error: unknown, expected: ExpectedError): void {
  const e = error as { name?: string; code?: string; message?: string };
  expect({ name: e.name, code: e.code }).toEqual({ name: expected.name, code: expected.code });
  expect(e.message).toMatch(expected.message);
}

export function expectThrows(fn: () => unknown, expected: ExpectedError): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  if (caught === undefined) throw new Error(`expected ${expected.name} matching ${expected.message}, nothing was thrown`);
  check(caught, expected);
}

export async function expectRejects(promise: Promise<unknown>, expected: ExpectedError): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  if (caught === undefined) throw new Error(`expected a rejection with ${expected.name}, the promise resolved`);
  check(caught, expected);
}

import type request from 'supertest';
import { expect } from 'vitest';

/** An RFC 9457 problem with our stable code, the response's request id, and nothing internal. */
export function expectProblem(res: request.Response, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({
    type: `https://payments.example/problems/${code.replaceAll('_', '-')}`,
    title: expect.any(String),
    status,
    detail: expect.any(String),
    code,
  });
  expect(res.body.request_id).toBe(res.headers['x-request-id']);
  expect(res.text).not.toMatch(/<html|<pre>|at .*\.ts:\d+|select |insert /i);
}

/**
 * API token routes (admin only; a token limited to VM patterns cannot use them, see api/auth.ts):
 *   GET    /v1/tokens                       every token: id, name, role, vms, createdAt, lastUsedAt
 *   POST   /v1/tokens {name, role, vms?}    201 with `token`, the only time it is shown
 *   DELETE /v1/tokens/:id                   revoked at once (requests with it get 401)
 */
import type { FastifyInstance } from 'fastify';
import type { CreateTokenRequest, TokenStore } from '../auth/token-store.js';
import { MAX_VM_PATTERNS, ROLES } from '../auth/permissions.js';

export interface TokenRouteContext {
  tokens: TokenStore;
}

export function registerTokenRoutes(app: FastifyInstance, ctx: TokenRouteContext): void {
  const admin = { config: { permission: 'admin' as const } };

  app.get('/v1/tokens', admin, async () => ({ tokens: ctx.tokens.list() }));

  app.post<{ Body: CreateTokenRequest }>(
    '/v1/tokens',
    {
      ...admin,
      schema: {
        body: {
          type: 'object',
          required: ['name', 'role'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 64 },
            role: { type: 'string', enum: [...ROLES] },
            vms: { type: 'array', maxItems: MAX_VM_PATTERNS, items: { type: 'string', minLength: 1, maxLength: 128 } },
          },
        },
      },
    },
    async (req, reply) => {
      const { token, info } = await ctx.tokens.create(req.body);
      return reply.status(201).send({ ...info, token });
    },
  );

  app.delete<{ Params: { id: string } }>('/v1/tokens/:id', admin, async (req) => ({ revoked: await ctx.tokens.revoke(req.params.id) }));
}

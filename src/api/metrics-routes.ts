/**
 * GET /metrics: the Prometheus text exposition of the daemon's metrics (metrics/metrics.ts).
 * Permission `read`: Prometheus scrapes with a `viewer` token (docs/metrics.md).
 */
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics/metrics.js';

export interface MetricsRouteContext {
  metrics: Metrics;
}

export function registerMetricsRoutes(app: FastifyInstance, ctx: MetricsRouteContext): void {
  app.get(
    '/metrics',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'Prometheus metrics (text exposition format 0.0.4)',
        tags: ['metrics'],
        produces: ['text/plain'],
        response: { 200: { description: 'Prometheus text format', type: 'string' } },
      },
    },
    async (_req, reply) => {
      const body = await ctx.metrics.scrape();
      return reply.header('content-type', ctx.metrics.contentType).header('cache-control', 'no-store').send(body);
    },
  );
}

import { Option, type Command } from 'commander';
import type { TokenInfo } from '../../auth/token-store.js';
import { ROLES, ROLE_DOCS } from '../../auth/permissions.js';
import { apiClient, table } from '../api.js';
import type { CliIo } from '../io.js';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function registerToken(program: Command, io: CliIo): void {
  const token = program
    .command('token')
    .description('manage the API tokens of the daemon (admin): create, list, revoke')
    .addHelpText(
      'after',
      '\nRoles:\n' + ROLES.map((r) => `  ${r.padEnd(9)} ${ROLE_DOCS[r]}`).join('\n') + '\n' +
        '\nA token is shown once, when created; the daemon keeps only its sha256 digest.\n' +
        'Clients send it as `Authorization: Bearer TOKEN`; the CLI takes --token-file FILE, REBOUND_TOKEN or REBOUND_TOKEN_FILE.',
    );

  token
    .command('create')
    .description('create a token and print it (shown once)')
    .requiredOption('--name <name>', 'what the token is for (1-64 characters), shown in lists and logs')
    .addOption(new Option('--role <role>', 'what it may do').choices([...ROLES]).makeOptionMandatory())
    .option('--vm <pattern>', 'limit it to VMs (and their sessions) matching a glob (* and ?), repeatable', collect)
    .option('--json', 'print the JSON answer (with the token)')
    .action(async (opts: { name: string; role: string; vm?: string[]; json?: boolean }, cmd: Command) => {
      const t = await apiClient(cmd, io).post<TokenInfo & { token: string }>('/v1/tokens', {
        name: opts.name,
        role: opts.role,
        ...(opts.vm?.length ? { vms: opts.vm } : {}),
      });
      if (opts.json) return io.stdout(JSON.stringify(t, null, 2) + '\n');
      io.stdout(`${t.token}\n`);
      io.stderr(`token ${t.id} (${t.name}, role ${t.role}${t.vms ? `, VMs ${t.vms.join(' ')}` : ''}) created; it is not shown again: store it now (a file of mode 0600)\n`);
    });

  token
    .command('list')
    .description('list the tokens (never the tokens themselves)')
    .option('--json', 'print the JSON answer')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const res = await apiClient(cmd, io).get<{ tokens: TokenInfo[] }>('/v1/tokens');
      if (opts.json) return io.stdout(JSON.stringify(res, null, 2) + '\n');
      io.stdout(
        table(
          ['ID', 'NAME', 'ROLE', 'VMS', 'CREATED', 'LAST USED'],
          res.tokens.map((t) => [t.id, t.name, t.role, t.vms?.join(',') ?? '*', t.createdAt, t.lastUsedAt ?? 'never']),
        ),
      );
    });

  token
    .command('revoke')
    .description('revoke a token at once (requests with it get 401)')
    .argument('<id>', 'the token id (rebound token list)')
    .option('--json', 'print the JSON answer')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const res = await apiClient(cmd, io).request<{ revoked: TokenInfo }>('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
      if (opts.json) return io.stdout(JSON.stringify(res, null, 2) + '\n');
      io.stdout(`revoked token ${res.revoked.id} (${res.revoked.name}, role ${res.revoked.role})\n`);
    });
}

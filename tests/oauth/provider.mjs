// A real OAuth 2.1 / OpenID Connect authorization server for the tests: the certified npm package
// oidc-provider, run on loopback. Usage: node provider.mjs <config.json>
//
// (node provider.mjs <config.json> <oidc-provider package folder>)
// config.json (written by tests/oauth/conftest.py):
//   { "port": 12345, "issuer": "http://127.0.0.1:12345",
//     "keys": [<private JWKs>],                         // signing keys (the tests keep a copy)
//     "clients": [<oidc-provider client metadata>],
//     "resources": { "<resource URL>": { "scope": "a b", "ttl": 600, "opaque_for": [<client ids>] } } }
//
// Besides the provider's own routes it serves, for the tests only:
//   POST /admin/keys   body {"keys": [...]}: start signing with a new key set (key rotation)
//   GET  /admin/stats  {"jwks": <how many times the JWKS document was requested>}
// It prints "ready <port>" on stdout once it listens.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The package lives in tests/node/node_modules (argv[3]), not beside this script.
const { default: Provider, errors } = await import(pathToFileURL(join(process.argv[3], 'lib', 'index.js')).href);
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let jwksRequests = 0;

function build(keys) {
  const provider = new Provider(config.issuer, {
    clients: config.clients,
    jwks: { keys },
    scopes: ['openid', 'offline_access', ...new Set(Object.values(config.resources).flatMap((r) => r.scope.split(' ')))],
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    pkce: { required: () => true },
    // Public clients (the MCP client's PKCE flow) register themselves (RFC 7591), as hosts do.
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      registration: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator, client) => {
          const resource = config.resources[indicator];
          if (!resource) throw new errors.InvalidTarget();
          return {
            scope: resource.scope,
            audience: indicator,
            accessTokenTTL: resource.ttl ?? 600,
            // Some clients get opaque tokens, for the RFC 7662 introspection path.
            accessTokenFormat: (resource.opaque_for ?? []).includes(client.clientId) ? 'opaque' : 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: { AccessToken: 600, ClientCredentials: 600, Session: 3600, Interaction: 600, Grant: 3600 },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider.callback();
}

let handler = build(config.keys);

const server = http.createServer(async (req, res) => {
  if (req.url === '/admin/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ jwks: jwksRequests }));
    return;
  }
  if (req.url === '/admin/keys' && req.method === 'POST') {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    handler = build(JSON.parse(Buffer.concat(chunks).toString()).keys);
    res.end('{}');
    return;
  }
  if (req.url.split('?')[0] === '/jwks') jwksRequests += 1;
  handler(req, res);
});

server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${config.port}\n`);
});
